"""digits-c2i: the offline, CPU-sized stand-in of imagenet256-c2i, on data and a network the project ships.

Protocol: 1,000 class-conditional samples (100 per digit class, labels interleaved 0..9), uint8 RGB
32x32 (8x8 digits upscaled by nearest neighbour, grey on three channels). Reference: all 1,797 images
of scikit-learn's bundled digits in the same format. Features: the bundled DigitsNet
(`harness/features/digits_net.py`). Metrics are the ImageNet task's metric code on these features and
are named for what they are: `fd_digits` (Fréchet distance), `is_digits` (Inception-Score formula on
DigitsNet logits), `precision_digits` / `recall_digits` (k=3), and `class_accuracy_digits` (fraction
of samples DigitsNet classifies as the requested class). None of them is an ImageNet FID or IS.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from harness.datasets.digits import digits_to_images, load_digits_arrays
from harness.features.digits_net import digits_features, load_digits_net
from harness.errors import InputError
from harness.metrics.base import MetricValue
from harness.metrics.frechet import feature_statistics, frechet_distance
from harness.metrics.image import PR_NEIGHBOURHOOD, inception_score, precision_recall
from harness.registry import register_task
from harness.settings import Annotated, Field, Literal, PositiveInt, Seed
from harness.signature import Signature
from tasks._image_samples import ClassToImageTask, ImageSamples

METRIC_VERSIONS = {"fd_digits": "1", "is_digits": "1", "precision_recall_digits": "1", "class_accuracy_digits": "1"}


#: scikit-learn's digits: the reference set of this task.
REFERENCE_COUNT = 1797
#: Protocol cap on the sample count (the protocol is 1,000; far more only costs time and memory).
MAX_SAMPLES = 100_000


@dataclass
class DigitsC2IConfig:
    num_samples: Annotated[int, Field(ge=10, le=MAX_SAMPLES, description=f"digits-c2i scores 10..{MAX_SAMPLES:,} "
                                                                          f"samples; its protocol is 1,000")] = 1000
    num_classes: Literal[10] = 10
    image_size: Annotated[int, Field(ge=8, le=256)] = 32
    seed: Seed = 0
    is_splits: PositiveInt = 10
    pr_k: PositiveInt = PR_NEIGHBOURHOOD

    def __post_init__(self):
        if self.num_samples % self.num_classes:
            raise InputError(f"num_samples ({self.num_samples}) must be a multiple of num_classes "
                             f"({self.num_classes}): the requests are class-balanced.")
        if self.is_splits > self.num_samples:
            raise InputError(f"is_splits={self.is_splits} is more than num_samples={self.num_samples}: each "
                             f"Inception Score split needs at least one sample.")
        if self.pr_k >= min(self.num_samples, REFERENCE_COUNT):
            raise InputError(f"pr_k={self.pr_k}: Precision/Recall compare each sample with its pr_k-th nearest "
                             f"neighbour, so pr_k must be below num_samples ({self.num_samples}) and the "
                             f"{REFERENCE_COUNT} reference digits; the protocol uses {PR_NEIGHBOURHOOD}.")


def reference_images(size: int) -> np.ndarray:
    """The 1,797 scikit-learn digits in the task's image format."""
    return digits_to_images(load_digits_arrays()[0], size)


@register_task("digits-c2i")
class DigitsC2I(ClassToImageTask):
    version = "1"
    id_digits = 5
    description = "offline class-conditional digits (sklearn 8x8 -> 32x32): FD/IS/P/R on the bundled DigitsNet"
    primary_metric = "fd_digits"
    Config = DigitsC2IConfig
    offline = True
    demo_methods = ("digits-pca-gaussian", "digits-ar-raster", "digits-ar-par")

    def condition(self, label: int) -> dict:
        return {"label": label, "image_size": self.config.image_size}

    def signature(self) -> Signature:
        sig = super().signature()
        _, net_sha = load_digits_net()
        reference = reference_images(self.config.image_size)
        sig.add("reference", f"sklearn-digits-{len(reference)}")
        sig.add("reference_sha256", hashlib.sha256(reference.tobytes()).hexdigest())
        sig.add("feature_net", "DigitsNet").add("feature_net_sha256", net_sha)
        sig.update("metric_version", METRIC_VERSIONS)
        return sig

    def score(self, samples: ImageSamples, ctx) -> list[MetricValue]:
        cfg = self.config
        model, _ = load_digits_net()
        ref = digits_features(model, reference_images(cfg.image_size))
        fake = digits_features(model, samples.array())
        fd = frechet_distance(*feature_statistics(fake["pool"]), *feature_statistics(ref["pool"]), log=ctx.log)
        is_mean, is_std = inception_score(fake["logits"], cfg.is_splits)
        precision, recall = precision_recall(ref["pool"], fake["pool"], cfg.pr_k)
        v = METRIC_VERSIONS
        metrics = [
            MetricValue("fd_digits", fd, False, "", v["fd_digits"],
                        description="Fréchet distance on DigitsNet features (128-d) vs the 1,797 sklearn digits"),
            MetricValue("is_digits", is_mean, True, "", v["is_digits"],
                        description=f"Inception-Score formula on DigitsNet logits ({cfg.is_splits} contiguous "
                                    f"splits); at most 10"),
            MetricValue("precision_digits", precision, True, "fraction", v["precision_recall_digits"],
                        description=f"Precision (k={cfg.pr_k}) on DigitsNet features"),
            MetricValue("recall_digits", recall, True, "fraction", v["precision_recall_digits"],
                        description=f"Recall (k={cfg.pr_k}) on DigitsNet features"),
        ]
        if samples.labels is not None:
            accuracy = float((fake["logits"].argmax(1) == samples.labels).mean())
            metrics.append(MetricValue("class_accuracy_digits", accuracy, True, "fraction",
                                       v["class_accuracy_digits"],
                                       description="fraction of samples DigitsNet assigns to the requested class"))
        return metrics
