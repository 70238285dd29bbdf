"""ImageNet 256x256 class-conditional generation, scored exactly as ADM's evaluation suite does.

Protocol: 50,000 uint8 256x256 RGB samples, 50 per class. Reference: ADM's
`VIRTUAL_imagenet256_labeled.npz` (pool3 `mu`/`sigma`, spatial `mu_s`/`sigma_s`, and 10,000 images for
Precision/Recall). Metrics: FID and sFID (Fréchet distance on pool3 / mixed_6 features), Inception
Score (contiguous 5,000-sample splits), Precision/Recall (k=3 against the 10k reference images, ADM's
float16 distances), plus a clean-fid
"clean"-mode FID against the same 10k reference images (a different metric: PIL bicubic resize and
NVIDIA's TorchScript Inception; it is *not* comparable with FID). Reference features are computed
once per (reference file, network) and cached under `$ARBENCH_HOME/cache/`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.config import arbench_home
from harness.errors import InputError
from harness.inputs import open_npz
from harness.features.inception import (CLEANFID_INCEPTION, FID_INCEPTION, InceptionConfig, extract_cleanfid_features,
                                        extract_inception_features, load_cleanfid_inception, load_fid_inception)
from harness.metrics.base import MetricValue
from harness.metrics.frechet import feature_statistics, frechet_distance
from harness.metrics.image import ADM_IS_SPLIT_SIZE, PR_NEIGHBOURHOOD, inception_score, precision_recall
from harness.registry import register_task
from harness.settings import Annotated, Field, Literal, PositiveInt, Seed
from harness.signature import Signature
from harness.weights import WeightSpec, register_weights, require_all
from tasks._image_samples import ClassToImageTask, ImageSamples, check_image_array_header

ADM_REFERENCE_256 = register_weights(WeightSpec(
    name="adm-imagenet256-reference",
    filename="VIRTUAL_imagenet256_labeled.npz",
    url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
        "VIRTUAL_imagenet256_labeled.npz",
    sha256=None,  # OpenAI publishes no checksum; every run's signature records the sha256 of the file used
    license="MIT (openai/guided-diffusion); images from ImageNet (research use)",
    description="ADM reference batch for ImageNet 256: mu/sigma, mu_s/sigma_s, 10k images for Precision/Recall",
))

#: Metric versions; bump one whenever its number for the same inputs could change.
#: inception_score 2: ADM's fixed 5,000-sample splits (was 10 splits; same number at 50,000 samples).
#: precision_recall 2: ADM's float16 distances (was float32).
METRIC_VERSIONS = {"fid": "1", "sfid": "1", "inception_score": "2", "precision_recall": "2", "clean_fid": "1"}
PR_DISTANCE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


#: Protocol cap on the sample count (ADM scores 50,000; a larger set only costs time and memory).
MAX_SAMPLES = 200_000


@dataclass
class ImageNet256Config:
    num_samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES, description=f"imagenet256-c2i scores at most "
                                                                        f"{MAX_SAMPLES:,} samples; ADM's is 50,000")] = 50_000
    num_classes: Annotated[int, Field(ge=1, le=1000)] = 1000
    image_size: Annotated[int, Field(ge=8, le=1024)] = 256
    seed: Seed = 0
    is_split_size: PositiveInt = ADM_IS_SPLIT_SIZE  # ADM fixes the split size, not the number of splits
    pr_k: PositiveInt = PR_NEIGHBOURHOOD
    #: ADM computes the k-NN distances in float16; "float32" is exact but not what ADM reports.
    pr_distance_dtype: Literal["float16", "float32"] = "float16"
    #: fp32 Inception outputs move by ~1e-6 with the batch size (torch-fidelity #43)
    feature_batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    clean_fid: bool = True
    #: Local files (default: the `arbench weights` cache). Their sha256, not their paths, enter the signature.
    reference: str = ""
    inception_weights: str = ""
    cleanfid_weights: str = ""

    def __post_init__(self):
        if self.is_split_size > self.num_samples:
            raise InputError(f"is_split_size={self.is_split_size} is more than num_samples={self.num_samples}: "
                             f"the Inception Score needs at least one full split (ADM: {ADM_IS_SPLIT_SIZE}).")
        if self.pr_k >= self.num_samples:
            raise InputError(f"pr_k={self.pr_k}: Precision/Recall compare each sample with its pr_k-th nearest "
                             f"neighbour, so pr_k must be below num_samples ({self.num_samples}); ADM uses "
                             f"{PR_NEIGHBOURHOOD}.")


@dataclass
class Reference:
    """Reference statistics and the (cached) features of its images."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray
    sigma_s: np.ndarray
    pool: np.ndarray
    clean: np.ndarray | None


PATH_SETTINGS = ("reference", "inception_weights", "cleanfid_weights")


@register_task("imagenet256-c2i")
class ImageNet256(ClassToImageTask):
    version = "1"
    description = "ImageNet 256x256 class-conditional: ADM-equivalent FID, sFID, IS, Precision/Recall, clean-FID"
    primary_metric = "fid"
    Config = ImageNet256Config
    features = InceptionConfig()

    # -- protocol ------------------------------------------------------------------------------
    # -- files and signature -------------------------------------------------------------------
    def _file(self, spec: WeightSpec, explicit: str) -> tuple[Path, str]:
        """Resolve a file; an explicit path is taken as given and identified by its own sha256."""
        return spec.locate(explicit)

    def signature(self) -> Signature:
        c = self.config
        files = [(ADM_REFERENCE_256, c.reference), (FID_INCEPTION, c.inception_weights)]
        if c.clean_fid:
            files.append((CLEANFID_INCEPTION, c.cleanfid_weights))
        # every missing reference or evaluator file is named at once
        found = require_all([functools.partial(self._file, spec, path) for spec, path in files], f"task {self.name}")
        sig = Signature().add("task", self.name).add("task_version", self.version)
        sig.update("task", {k: v for k, v in self.settings().items() if k not in PATH_SETTINGS})
        sig.add("reference_sha256", found[0][1])
        sig.add("inception_sha256", found[1][1])
        sig.update("features", dataclasses.asdict(self.features))
        if c.clean_fid:
            sig.add("cleanfid_sha256", found[2][1])
            sig.add("cleanfid_mode", "clean")
        sig.update("metric_version", METRIC_VERSIONS)
        return sig

    # -- reference -----------------------------------------------------------------------------
    def load_reference(self, model, clean_model, device: str, log) -> Reference:
        path, ref_sha = self._file(ADM_REFERENCE_256, self.config.reference)
        _, net_sha = self._file(FID_INCEPTION, self.config.inception_weights)
        with open_npz(path) as archive:
            names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
        if "arr_0" not in names:
            raise InputError(f"{path} has no arr_0 images: Precision/Recall need ADM's full reference batch "
                             f"{ADM_REFERENCE_256.filename} ({ADM_REFERENCE_256.url}), not a statistics-only file.")
        with np.load(path, allow_pickle=False) as data:
            stats = {k: np.asarray(data[k], dtype=np.float64) for k in ("mu", "sigma", "mu_s", "sigma_s") if k in data}

        def reference_images() -> np.ndarray:  # 2 GB for ADM's batch: read only when a cache is missing
            with np.load(path, allow_pickle=False) as data:
                images = data["arr_0"]
            check_image_array_header(path, images.shape, images.dtype, images.shape[1])
            log(f"computing reference features of {len(images)} images (cached under {cache.parent})")
            return images

        cache = arbench_home() / "cache" / "imagenet256" / f"ref-{ref_sha[:16]}-inception-{net_sha[:16]}-bs{self.config.feature_batch_size}.npz"
        feats = _load_cache(cache)
        if feats is None:
            feats = extract_inception_features(model, reference_images(), self.config.feature_batch_size, device)
            _save_cache(cache, pool=feats["pool"], spatial=feats["spatial"])
        if len(stats) < 4:  # as ADM: a reference without statistics gets them from its images
            log("reference has no mu/sigma/mu_s/sigma_s; computing them from its images")
            stats["mu"], stats["sigma"] = feature_statistics(feats["pool"])
            stats["mu_s"], stats["sigma_s"] = feature_statistics(feats["spatial"])
        clean = None
        if clean_model is not None:
            _, clean_sha = self._file(CLEANFID_INCEPTION, self.config.cleanfid_weights)
            clean_cache = cache.with_name(f"ref-{ref_sha[:16]}-cleanfid-{clean_sha[:16]}.npz")
            cached = _load_cache(clean_cache)
            if cached is None:
                cached = {"pool": extract_cleanfid_features(clean_model, reference_images(),
                                                            self.config.feature_batch_size, device)}
                _save_cache(clean_cache, **cached)
            clean = cached["pool"]
        _check_reference(path, stats, self.features)
        return Reference(stats["mu"], stats["sigma"], stats["mu_s"], stats["sigma_s"], feats["pool"], clean)

    # -- scoring -------------------------------------------------------------------------------
    def score(self, samples: ImageSamples, ctx) -> list[MetricValue]:
        cfg = self.config
        model, _ = load_fid_inception(cfg.inception_weights or None, ctx.device, self.features)
        clean_model = load_cleanfid_inception(cfg.cleanfid_weights or None, ctx.device)[0] if cfg.clean_fid else None
        ref = self.load_reference(model, clean_model, ctx.device, ctx.log)
        if samples.labels is not None and np.all(np.diff(samples.labels) >= 0):
            ctx.log("samples are sorted by class: each contiguous Inception Score split sees only some classes, "
                    "which lowers IS (ADM's convention scores the file order as given)")
        ctx.log(f"computing Inception features of {samples.count} samples")
        feats = extract_inception_features(model, samples.chunks(cfg.feature_batch_size), cfg.feature_batch_size,
                                           ctx.device)
        fid = frechet_distance(*feature_statistics(feats["pool"]), ref.mu, ref.sigma, log=ctx.log)
        sfid = frechet_distance(*feature_statistics(feats["spatial"]), ref.mu_s, ref.sigma_s, log=ctx.log)
        is_mean, is_std = inception_score(feats["logits"], split_size=cfg.is_split_size)
        precision, recall = precision_recall(ref.pool, feats["pool"], cfg.pr_k,
                                             distance_dtype=PR_DISTANCE_DTYPES[cfg.pr_distance_dtype])
        v = METRIC_VERSIONS
        metrics = [
            MetricValue("fid", fid, False, "", v["fid"], description="FID, ADM evaluator equivalent (pool3, 2048-d)"),
            MetricValue("sfid", sfid, False, "", v["sfid"],
                        description="sFID, ADM evaluator equivalent (mixed_6/conv, 7 channels, HWC, 2023-d)"),
            MetricValue("inception_score", is_mean, True, "", v["inception_score"],
                        description=f"Inception Score, ADM convention (contiguous {cfg.is_split_size}-sample "
                                    f"splits)"),
            MetricValue("inception_score_std", is_std, False, "", v["inception_score"],
                        description="standard deviation of the Inception Score over the splits"),
            MetricValue("precision", precision, True, "fraction", v["precision_recall"],
                        description=f"Precision, Kynkäänniemi et al. k={cfg.pr_k} vs the reference images "
                                    f"({cfg.pr_distance_dtype} distances)"),
            MetricValue("recall", recall, True, "fraction", v["precision_recall"],
                        description=f"Recall, Kynkäänniemi et al. k={cfg.pr_k} vs the reference images "
                                    f"({cfg.pr_distance_dtype} distances)"),
        ]
        if clean_model is not None:
            ctx.log("computing clean-fid ('clean' mode) features of the samples")
            clean = extract_cleanfid_features(clean_model, samples.chunks(cfg.feature_batch_size),
                                              cfg.feature_batch_size, ctx.device)
            value = frechet_distance(*feature_statistics(clean), *feature_statistics(ref.clean), log=ctx.log)
            metrics.append(MetricValue(
                "clean_fid_ref10k", value, False, "", v["clean_fid"],
                description=f"clean-fid 'clean' mode FID against the {len(ref.clean)} reference-batch images "
                            "(PIL bicubic resize, NVIDIA TorchScript Inception); not comparable with FID"))
        return metrics


def _check_reference(path: Path, stats: dict[str, np.ndarray], features: InceptionConfig) -> None:
    expected = {"mu": (features.pool_dims,), "sigma": (features.pool_dims, features.pool_dims),
                "mu_s": (features.spatial_dims,), "sigma_s": (features.spatial_dims, features.spatial_dims)}
    for key, shape in expected.items():
        if stats[key].shape != shape:
            raise InputError(f"{path}: {key} has shape {stats[key].shape}, expected {shape}; is this ADM's "
                             f"reference batch ({ADM_REFERENCE_256.filename})?")
        if not np.isfinite(stats[key]).all():
            raise InputError(f"{path}: {key} contains NaN or infinity; fetch the reference file again.")


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None  # a damaged cache is recomputed


def _save_cache(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
