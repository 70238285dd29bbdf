"""Fréchet Video Distance under named protocols, and its offline twin on moving digits.

FVD is only comparable when *everything* below agrees, so each protocol is one task name and every
field of it is in the signature:

| task | generated vs real | real split | frames x stride | px | repeats |
|---|---|---|---|---|---|
| `ucf101-fvd2048-16f-128` | 2048 vs 2048 | train+test | 16 x 1 | 128 | 1 |
| `ucf101-fvd2048-16f-256` | 2048 vs 2048 | train+test | 16 x 1 | 256 | 1 |
| `ucf101-fvd10k-16f-128` | 10000 vs 10000 | train | 16 x 1 | 128 | 4 (mean, std) |
| `ucf101-fvd2048-128f-128` | 2048 vs 2048 | train+test | 128 x 1 | 128 | 1 |
| `ucf101-fvd2048-16f-stride8-128` | 2048 vs 2048 | train+test | 16 x 8 | 128 | 1 |

Generated clips: requests are class-balanced (label `i % 101`) with per-request seeds; a clip is the
first `(frames - 1) * stride + 1` frames of the video at the given stride. Real clips: a seeded,
class-stratified draw from the local UCF-101 copy (classes interleaved round-robin, videos shuffled
within each class), one seeded random window per clip, frames resized short side first and centre-
cropped to the protocol resolution. Features: Kinetics-400 I3D logits (`harness.features.i3d`).
Real statistics are cached per protocol, seed, split-list checksum and I3D weights.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from harness.api import Request, SubmissionSpec, Task
from harness.config import arbench_home
from harness.datasets.ucf101 import UCF101_CLASS_NAMES
from harness.errors import InputError, MissingAssetError
from harness.features import i3d, videomae
from harness.metrics.base import MetricValue
from harness.metrics.video import (FVD_VERSION, VideoSamples, clip_indices, clip_span, clip_statistics, fvd,
                                   load_video_samples, maximum_likelihood_covariance, random_clip_offset, read_video,
                                   resize_short_side_center_crop)
from harness.registry import register_task
from harness.settings import Annotated, Field, Literal, Seed
from harness.signature import Signature
from harness.weights import require_all

UCF101_ENV = "ARBENCH_UCF101"
UCF101_CLASSES = 101
REAL_PREPROCESS = "short-side-bilinear-antialias+center-crop"
GENERATED_PREPROCESS = "none (must match the protocol resolution)"


CD_FVD_METRIC = "cd_fvd"
#: 2: covariances divided by N, as cd-fvd computes them (1 used N - 1, as FVD does).
CD_FVD_VERSION = "2"
CD_FVD_FEATURES = "videomae-v2-g-ssv2-ft:fc_norm(mean-tokens)"
CD_FVD_DESCRIPTION = ("content-debiased FVD (Ge et al. 2024): Fréchet distance of VideoMAE-v2 ViT-g features; "
                      "a different metric from FVD, never comparable with it")


@dataclass(frozen=True)
class FVDProtocol:
    """One FVD protocol: how many clips of what, from where, at which resolution."""

    resolution: int
    num_frames: int = 16
    stride: int = 1
    num_generated: int = 2048
    num_real: int = 2048
    real_splits: tuple[str, ...] = ("train", "test")
    repeats: int = 1
    num_classes: int = UCF101_CLASSES

    @property
    def span(self) -> int:
        return clip_span(self.num_frames, self.stride)


class VideoFVDTask(Task):
    """Shared flow of every FVD task: balanced class-conditional requests, validated samples, real
    statistics per repeat, FVD per repeat (mean and std over repeats)."""

    modality = "class-to-video"
    submission = SubmissionSpec("class-to-video", "generate(requests) -> uint8 array (N, T, H, W, 3), one video "
                                "per request (condition: label, num_frames, resolution)")
    protocol: FVDProtocol
    metric_name = "fvd"
    metric_description = ""
    feature_dim = i3d.FEATURE_DIM

    # -- requests and storage --------------------------------------------------------------------
    def requests(self) -> list[Request]:
        p = self.protocol
        total = p.num_generated * p.repeats
        return [Request(i, f"clip-{i:06d}", self.config.seed * 1_000_003 + i,
                        {"label": i % p.num_classes, "num_frames": p.span, "resolution": p.resolution})
                for i in range(total)]

    def write_shard(self, outputs, requests: Sequence[Request], directory: Path) -> None:
        videos = np.asarray(outputs)
        p = self.protocol
        if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[0] != len(requests) \
                or videos.shape[2:] != (p.resolution, p.resolution, 3) or videos.shape[1] < p.span:
            raise InputError(f"the method returned {videos.dtype} {videos.shape}; task {self.name} needs uint8 "
                             f"[{len(requests)}, >={p.span}, {p.resolution}, {p.resolution}, 3]")
        np.save(directory / "videos.npy", videos)
        np.save(directory / "labels.npy", np.array([r.condition["label"] for r in requests], dtype=np.int64))

    def read_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request]) -> VideoSamples:
        arrays = [np.load(d / "videos.npy", mmap_mode="r", allow_pickle=False) for d in shard_dirs]
        labels = np.concatenate([np.load(d / "labels.npy", allow_pickle=False) for d in shard_dirs])
        return VideoSamples(self.protocol.num_frames, self.protocol.stride, arrays=arrays, labels=labels)

    def load_samples(self, path: Path) -> VideoSamples:
        p = self.protocol
        self.check_assets()
        samples = load_video_samples(path, count=p.num_generated * p.repeats, num_frames=p.num_frames,
                                     stride=p.stride, resolution=p.resolution, num_classes=p.num_classes,
                                     what=f"task {self.name}", caps=self.caps)
        expected = np.array([r.condition["label"] for r in self.requests()])
        if not np.array_equal(samples.labels, expected):
            first = int(np.flatnonzero(samples.labels != expected)[0])
            raise InputError(f"task {self.name} is class-balanced: sample i (in file-name order) must be of class "
                             f"i % {p.num_classes}, as the task's requests ask; sample {first} has label "
                             f"{samples.labels[first]}, expected {expected[first]}. Generate and name them in "
                             f"request order.")
        return samples

    # -- scoring ---------------------------------------------------------------------------------
    def check_assets(self) -> None:
        """Raise MissingAssetError (before anything is stored) when weights or real data are absent."""

    @abstractmethod
    def feature_extractor(self, device: str) -> Callable[[np.ndarray], torch.Tensor]:
        """uint8 clips [N, T, H, W, 3] -> features [N, feature_dim]."""

    @abstractmethod
    def real_statistics(self, repeat: int, features: Callable, ctx) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance) of the real clips of one repeat."""

    def score(self, samples: VideoSamples, ctx) -> list[MetricValue]:
        p = self.protocol
        features = self.feature_extractor(ctx.device)
        values = []
        for repeat in range(p.repeats):
            real = self.real_statistics(repeat, features, ctx)
            indices = range(repeat * p.num_generated, (repeat + 1) * p.num_generated)
            batches = samples.batches(self.config.feature_batch_size, indices)
            mean, cov, _ = clip_statistics(batches, features, self.feature_dim,
                                           lambda it: ctx.progress(it, desc=f"features (repeat {repeat})"))
            values.append(fvd(real, (mean, cov)))
            ctx.log(f"repeat {repeat}: {self.metric_name} = {values[-1]:.4f}")
        ctx.extra_provenance["fvd_per_repeat"] = values
        result = [MetricValue(self.metric_name, float(np.mean(values)), False, "", FVD_VERSION,
                              description=self.metric_description)]
        if p.repeats > 1:
            result.append(MetricValue(f"{self.metric_name}_std", float(np.std(values, ddof=1)), False, "",
                                      FVD_VERSION, description=f"sample std of {self.metric_name} over "
                                                               f"{p.repeats} repeats"))
        return result

    def protocol_signature(self, sig: Signature) -> Signature:
        sig.update("protocol", asdict(self.protocol))
        sig.add("metric", f"{self.metric_name}:{FVD_VERSION}").add("stats", "float64-mean+unbiased-cov")
        sig.add("generated_clip", "offset0").add("generated_preprocess", GENERATED_PREPROCESS)
        return sig


# -- UCF-101 protocols -------------------------------------------------------------------------------


@dataclass
class UCF101Config:
    """Where the data and weights are, and the seed of the real-clip draw (in the signature)."""

    ucf101_root: str = ""  # holds UCF-101/<Class>/*.avi and ucfTrainTestlist/; default $ARBENCH_UCF101
    i3d_backend: Literal["tats", "torchscript"] = "tats"  # project I3D + i3d_pretrained_400.pt, or StyleGAN-V's
    i3d_weights: str = ""  # explicit weights path; default: the weights cache
    i3d_resize: Literal["torch-halfpixel", "tf1-legacy"] = "torch-halfpixel"  # tf1-legacy: TF FVD's resize_bilinear
    seed: Seed = 0
    feature_batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    cd_fvd: bool = False  # also content-debiased FVD (VideoMAE-v2 features), a separate, non-comparable metric
    videomae_weights: str = ""  # explicit weights path for cd-FVD; default: the weights cache


def ucf101_root(configured: str) -> Path:
    root = Path(configured or os.environ.get(UCF101_ENV, "") or arbench_home() / "datasets" / "ucf101").expanduser()
    lists = root / "ucfTrainTestlist"
    if not (root / "UCF-101").is_dir() or not (lists / "classInd.txt").is_file():
        raise MissingAssetError(
            f"no UCF-101 copy at {root}: it needs UCF-101/<Class>/v_*.avi and ucfTrainTestlist/ (classInd.txt, "
            f"trainlist01.txt, testlist01.txt) from https://www.crcv.ucf.edu/data/UCF101.php. "
            f"Unpack UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip there, or point "
            f"--set ucf101_root=... (or ${UCF101_ENV}) at the folder holding both."
        )
    return root


def check_class_order(root: Path) -> None:
    """Refuse a copy whose `classInd.txt` is not the official list in its order: class-conditional labels (and
    text-to-video prompts made from them) follow the official order, so another order would score every
    generated class against the wrong real class under a plausible-looking number."""
    path = root / "ucfTrainTestlist" / "classInd.txt"
    order = [line.split()[1] for line in sorted((ln for ln in path.read_text().split("\n") if ln.strip()),
                                                 key=lambda ln: int(ln.split()[0]))]
    if order != list(UCF101_CLASS_NAMES):
        first = next((i for i, (a, b) in enumerate(zip(order, UCF101_CLASS_NAMES)) if a != b), min(len(order), 101))
        found = order[first] if first < len(order) else "nothing"
        wanted = UCF101_CLASS_NAMES[first] if first < len(UCF101_CLASS_NAMES) else "nothing"
        raise InputError(f"{path} is not UCF-101's official class list ({len(order)} classes): label {first + 1} is "
                         f"{found!r} where the official file has {wanted!r}. Class labels follow the official "
                         "order; restore the file from UCF101TrainTestSplits-RecognitionTask.zip.")


def ucf101_split(root: Path, splits: Sequence[str]) -> tuple[list[str], np.ndarray, str]:
    """Relative paths and 0-based labels of split 1 (`train`, `test`), and a sha256 over the list files."""
    lists = root / "ucfTrainTestlist"
    digest = hashlib.sha256()
    class_index: dict[str, int] = {}
    text = (lists / "classInd.txt").read_text()
    digest.update(text.encode())
    for line in text.split("\n"):
        if line.strip():
            number, name = line.split()
            class_index[name] = int(number) - 1
    paths, labels = [], []
    for split in splits:
        list_file = lists / f"{split}list01.txt"
        if not list_file.is_file():
            raise MissingAssetError(f"{list_file} is missing from the UCF-101 split lists")
        text = list_file.read_text()
        digest.update(text.encode())
        for line in text.split("\n"):
            if line.strip():
                rel = line.split()[0]
                paths.append(rel)
                labels.append(class_index[rel.split("/")[0]])
    return paths, np.array(labels, dtype=np.int64), digest.hexdigest()


def stratified_order(labels: np.ndarray, seed: int, num_classes: int) -> np.ndarray:
    """Indices with classes interleaved round-robin (class 0, 1, ..., then again) and each class's
    items in a seeded random order: any prefix is as class-balanced as the data allows."""
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in range(num_classes)]
    order = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return np.array(order, dtype=np.int64)


def video_length(path: Path) -> int:
    """Frame count from the container header (decoding the file when the header has none)."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = container.streams.video[0].frames
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise InputError(f"cannot read UCF-101 video {path} ({exc}); the local copy is damaged") from exc
    return int(frames) if frames else len(read_video(path))


class UCF101FVD(VideoFVDTask):
    """FVD of class-conditional UCF-101 generation under one named protocol (and, with `cd_fvd=True`,
    content-debiased FVD beside it as its own metric)."""

    primary_metric = "fvd"
    cd_feature_dim = videomae.FEATURE_DIM
    Config = UCF101Config
    metric_description = "Fréchet Video Distance, Kinetics-400 I3D logits (TF-Hub weights)"

    def signature(self) -> Signature:
        c = self.config
        if c.i3d_resize not in i3d.RESIZE_MODES:
            raise InputError(f"unknown i3d_resize {c.i3d_resize!r}: use one of {', '.join(i3d.RESIZE_MODES)}")
        try:
            real_sha = self.real_list()[2]
        except MissingAssetError:
            self.check_assets()  # without the data: name it and every missing weight file in one message
            raise
        sig = Signature().add("task", self.name).add("task_version", self.version)
        self.protocol_signature(sig)
        sig.add("real_set", "ucf101-split1").add("real_list_sha256", real_sha).add("seed", c.seed)
        sig.add("real_selection", "class-stratified-round-robin+seeded-window").add("real_preprocess", REAL_PREPROCESS)
        spec = i3d.weights_spec(c.i3d_backend)
        sig.add("features", f"i3d-k400-logits:{c.i3d_backend}").add("features_git_blob", spec.git_blob_sha1)
        sig.add("features_bn_eps", i3d.I3DConfig().bn_eps if c.i3d_backend == "tats" else "torchscript")
        sig.add("features_resize", f"bilinear-{i3d.INPUT_SIZE}-{i3d.RESIZE_IDS[c.i3d_resize]}-noantialias")
        if c.cd_fvd:
            sig.add("cd_fvd", f"{CD_FVD_METRIC}:{CD_FVD_VERSION}").add("cd_fvd_features", CD_FVD_FEATURES)
            sig.add("cd_fvd_preprocess", videomae.PREPROCESS).add("cd_fvd_stats", "float64-mean+biased-cov")
        return sig

    def settings(self) -> dict:
        c = self.config
        return {"seed": c.seed, "i3d_backend": c.i3d_backend, "i3d_resize": c.i3d_resize,  # paths change no number
                "cd_fvd": c.cd_fvd}

    def real_list(self) -> tuple[list[str], np.ndarray, str]:
        root = ucf101_root(self.config.ucf101_root)
        if self.protocol.num_classes == UCF101_CLASSES:  # the real protocols (a test's tiny copy has 3 classes)
            check_class_order(root)
        return ucf101_split(root, self.protocol.real_splits)

    def check_assets(self) -> None:
        c = self.config
        checks = [self.real_list, lambda: i3d.weights_spec(c.i3d_backend).resolve(c.i3d_weights or None)]
        if self.config.cd_fvd:
            checks.append(lambda: videomae.VIDEOMAE_V2_G.resolve(self.config.videomae_weights or None))
        require_all(checks, f"task {self.name}")  # every missing file named at once

    def cd_feature_extractor(self, device: str) -> Callable[[np.ndarray], torch.Tensor]:
        """The cd-FVD feature function (VideoMAE-v2 ViT-g)."""
        path = videomae.VIDEOMAE_V2_G.resolve(self.config.videomae_weights or None)
        return videomae.videomae_features(videomae.load_videomae_v2(path), device)

    def score(self, samples: VideoSamples, ctx) -> list[MetricValue]:
        result = super().score(samples, ctx)
        if not self.config.cd_fvd:
            return result
        p = self.protocol
        features = self.cd_feature_extractor(ctx.device)
        values = []
        for repeat in range(p.repeats):
            real = self.real_statistics(repeat, features, ctx, kind="cdfvd", feature_dim=self.cd_feature_dim)
            indices = range(repeat * p.num_generated, (repeat + 1) * p.num_generated)
            mean, cov, count = clip_statistics(samples.batches(self.config.feature_batch_size, indices), features,
                                               self.cd_feature_dim,
                                               lambda it: ctx.progress(it, desc=f"cd-FVD features (repeat {repeat})"))
            values.append(fvd((real[0], maximum_likelihood_covariance(real[1], p.num_real)),
                              (mean, maximum_likelihood_covariance(cov, count))))
            ctx.log(f"repeat {repeat}: {CD_FVD_METRIC} = {values[-1]:.4f}")
        ctx.extra_provenance["cd_fvd_per_repeat"] = values
        result.append(MetricValue(CD_FVD_METRIC, float(np.mean(values)), False, "", CD_FVD_VERSION,
                                  description=CD_FVD_DESCRIPTION))
        if p.repeats > 1:
            result.append(MetricValue(f"{CD_FVD_METRIC}_std", float(np.std(values, ddof=1)), False, "",
                                      CD_FVD_VERSION, description=f"sample std of {CD_FVD_METRIC} over "
                                                                  f"{p.repeats} repeats"))
        return result

    def feature_extractor(self, device: str):
        c = self.config
        return i3d.load_i3d_features(c.i3d_backend, device, c.i3d_weights or None, c.feature_batch_size, c.i3d_resize)

    def real_clips(self, repeat: int) -> tuple[list[Path], list[int], np.ndarray]:
        """The real clips of one repeat: video paths, window offsets and labels."""
        p = self.protocol
        root = ucf101_root(self.config.ucf101_root)
        paths, labels, _ = self.real_list()
        lengths = np.array([video_length(root / "UCF-101" / rel) for rel in paths])
        usable = np.flatnonzero(lengths >= p.span)
        if len(usable) == 0:
            raise InputError(f"no UCF-101 video has the {p.span} frames task {self.name} needs")
        order = usable[stratified_order(labels[usable], self.config.seed + repeat, p.num_classes)]
        chosen = order[np.arange(p.num_real) % len(order)]  # more clips than videos: new windows, same order
        offsets = [random_clip_offset(np.random.default_rng([self.config.seed, repeat, i]), int(lengths[v]),
                                      p.num_frames, p.stride) for i, v in enumerate(chosen)]
        return [root / "UCF-101" / paths[v] for v in chosen], offsets, labels[chosen]

    def real_batches(self, repeat: int, batch_size: int) -> Iterator[np.ndarray]:
        p = self.protocol
        files, offsets, _ = self.real_clips(repeat)
        for start in range(0, len(files), batch_size):
            batch = []
            for path, offset in zip(files[start:start + batch_size], offsets[start:start + batch_size]):
                video = read_video(path, max_frames=offset + p.span)
                batch.append(resize_short_side_center_crop(video[clip_indices(len(video), p.num_frames, p.stride,
                                                                               offset)], p.resolution))
            yield np.stack(batch)

    def stats_cache_path(self, repeat: int, kind: str = "") -> Path:
        key = self.signature().subset(("task_version", "protocol.num_generated"))
        key.add("repeat", repeat)
        return arbench_home() / "fvd-stats" / f"{'-'.join(filter(None, [self.name, kind]))}-r{repeat}-{key.hash}.npz"

    def real_statistics(self, repeat: int, features, ctx, kind: str = "",
                        feature_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cached (mean, covariance) of the real clips of one repeat; `kind` names another feature network."""
        path = self.stats_cache_path(repeat, kind)
        if path.is_file():
            with np.load(path, allow_pickle=False) as cached:
                ctx.log(f"real statistics from cache {path}")
                return cached["mu"], cached["sigma"]
        ctx.log(f"computing real {kind or 'FVD'} statistics for repeat {repeat} ({self.protocol.num_real} clips)")
        mean, cov, count = clip_statistics(self.real_batches(repeat, self.config.feature_batch_size), features,
                                           feature_dim or self.feature_dim,
                                           lambda it: ctx.progress(it, desc="real features"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npz")
        np.savez(tmp, mu=mean, sigma=cov, count=count, signature=str(self.signature()))
        os.replace(tmp, path)
        return mean, cov


PROTOCOLS: dict[str, tuple[FVDProtocol, str]] = {
    "ucf101-fvd2048-16f-128": (FVDProtocol(resolution=128),
                               "UCF-101 class-conditional FVD: 2048 vs 2048 clips (train+test), 16 frames, 128 px"),
    "ucf101-fvd2048-16f-256": (FVDProtocol(resolution=256),
                               "UCF-101 class-conditional FVD: 2048 vs 2048 clips (train+test), 16 frames, 256 px"),
    "ucf101-fvd10k-16f-128": (FVDProtocol(resolution=128, num_generated=10_000, num_real=10_000,
                                          real_splits=("train",), repeats=4),
                              "UCF-101 class-conditional FVD, MAGVIT style: 10k vs 10k (train), 16 frames, 128 px, "
                              "mean and std of 4 repeats"),
    "ucf101-fvd2048-128f-128": (FVDProtocol(resolution=128, num_frames=128),
                                "UCF-101 long-video FVD: 2048 vs 2048 clips of 128 frames, 128 px"),
    "ucf101-fvd2048-16f-stride8-128": (FVDProtocol(resolution=128, stride=8),
                                       "UCF-101 long-video FVD: 2048 vs 2048 clips of 16 frames at stride 8 "
                                       "(121-frame span), 128 px"),
}


def _register_protocols() -> None:
    for task_name, (protocol, description) in PROTOCOLS.items():
        cls = type(f"UCF101FVD_{task_name.replace('-', '_')}", (UCF101FVD,),
                   {"protocol": protocol, "description": description, "__module__": __name__})
        register_task(task_name)(cls)


_register_protocols()


# -- the offline variant -------------------------------------------------------------------------


@dataclass
class MovingDigitsConfig:
    seed: Seed = 0
    feature_batch_size: Annotated[int, Field(ge=1, le=4096)] = 128


@register_task("moving-digits-fvd")
class MovingDigitsFVD(VideoFVDTask):
    """Fréchet distance on the bundled moving-digit network between 512 generated and 512 real
    moving-digit clips (32 px, 16 frames) of held-out scikit-learn digits. Offline; not I3D FVD."""

    description = "offline FVD twin: 512 vs 512 moving-digit clips, bundled video feature network (not I3D)"
    primary_metric = "fvd_digits"
    metric_name = "fvd_digits"
    metric_description = ("Fréchet distance of DigitMotionNet features of moving-digit clips; same protocol "
                          "logic as FVD, not comparable to I3D FVD")
    Config = MovingDigitsConfig
    protocol = FVDProtocol(resolution=32, num_generated=512, num_real=512, real_splits=("reference",),
                           num_classes=10)
    offline = True
    demo_methods = ("moving-digits-pca", "moving-digits-pca-static")
    feature_dim = 64

    def settings(self) -> dict:
        return {"seed": self.config.seed}

    def signature(self) -> Signature:
        from harness.features.digit_motion_net import weights_sha256

        sig = super().signature()
        self.protocol_signature(sig)
        sig.add("real_set", "sklearn-digits-i%5==0:moving-v1").add("features", "digit-motion-net")
        return sig.add("features_sha256", weights_sha256())

    def feature_extractor(self, device: str):
        from harness.features.digit_motion_net import load_digit_motion_net

        return _digits_features(load_digit_motion_net())

    def real_statistics(self, repeat: int, features, ctx) -> tuple[np.ndarray, np.ndarray]:
        return _digits_real_statistics(self.config.seed + repeat, self.protocol.num_real, features)


@lru_cache(maxsize=2)
def _digits_features(model) -> Callable[[np.ndarray], torch.Tensor]:
    @torch.no_grad()
    def features(clips: np.ndarray) -> torch.Tensor:
        return model.features(clips)
    return features


@lru_cache(maxsize=4)
def _digits_real_statistics(seed: int, count: int, features) -> tuple[np.ndarray, np.ndarray]:
    """Real statistics of the offline task, kept for the process (the demo scores two methods against them)."""
    from harness.datasets.moving_digits import balanced_labels, sample_clips

    clips, _ = sample_clips("reference", balanced_labels(count), seed=seed)
    mean, cov, _ = clip_statistics((clips[i:i + 256] for i in range(0, len(clips), 256)), features,
                                   MovingDigitsFVD.feature_dim)
    return mean, cov
