"""VBench's quality dimensions (Huang et al., CVPR 2024): per-video rules, their aggregation, and the quality score.

Faithful to Vchitect/VBench@45e79ec (`vbench/*.py`, `scripts/constant.py`, `scripts/cal_final_score.py`); the
networks that produce the features live in `harness.features.vbench_nets`, the protocol in `tasks/vbench.py`.

- **temporal flickering** (`temporal_flickering.py`): per video, ``(255 - mean_i MAE(frame_i, frame_i+1)) / 255``
  over every decoded frame; the dimension is the mean over videos.
- **motion smoothness** (`motion_smoothness.py`): AMT-S interpolates between the even frames at t = 1/2; per
  video ``(255 - mean_i MAE(odd frame i, interpolated frame i)) / 255`` on uint8 frames; the dimension is the
  mean over videos (the network and frame handling: `harness.features.amt`).
- **subject / background consistency** (`subject_consistency.py`, `background_consistency.py`): per frame
  ``i >= 1`` of a video, ``(max(0, cos(f_i-1, f_i)) + max(0, cos(f_0, f_i))) / 2`` of L2-normalised features
  (DINO ViT-B/16 CLS, CLIP ViT-B/32 image embedding); the dimension is the sum over all frames of all videos over
  the number of such frames (frame-weighted, not a mean of per-video means).
- **aesthetic quality** (`aesthetic_quality.py`): per video, the mean over frames of the LAION predictor's output on
  the L2-normalised CLIP ViT-L/14 embedding, divided by 10; the dimension is the mean over videos.
- **dynamic degree** (`dynamic_degree.py`): RAFT flow between consecutive frames taken every
  ``round(fps / 8)`` frames; a pair's score is the mean of its top 5% flow magnitudes; a video is dynamic when
  ``round(4 * n / 16)`` pairs exceed ``6 * min_side / 256``; the dimension is the fraction of dynamic videos.
- **static filter** (`static_filter.py`, run before temporal flickering): of the samples of a flickering prompt,
  in file-name order, the first 5 that RAFT finds static (top 2% magnitudes, see `is_static`) are scored.
- **imaging quality** (`imaging_quality.py`): per video, the mean MUSIQ (SPAQ) score of its frames (0..100); the
  dimension is the mean over videos / 100.
- **appearance style** (`appearance_style.py`, semantic): per frame, OpenAI CLIP ViT-B/32's ``logits_per_text / 100``
  against the prompt's style text (the network side: `harness.features.vbench_nets.appearance_style_scores`); per
  video the mean; the dimension is the sum over all frames of all videos over their number (`FrameMeanScore`).
- **temporal style, overall consistency** (`temporal_style.py`, `overall_consistency.py`, semantic): per video the
  cosine of ViCLIP's video embedding (8 middle frames) and the prompt's text embedding (`harness.features.viclip`);
  the dimension is the mean over videos (`VideoTextScore`).
- **quality score** (`scripts/cal_final_score.py`): each dimension is min/max normalised with VBench's
  `NORMALIZE_DIC`, weighted by `DIM_WEIGHT` (dynamic degree 0.5, the rest 1), summed over the quality dimensions
  and divided by the sum of their weights. `quality_score` takes the dimensions present and says which are missing.

Every accumulator keeps sums (``dist_reduce_fx="sum"``), so the result is the same for any batch and world size.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.metrics.base import Accumulator, MetricValue

VBENCH_REPO = "Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53"

#: VBench's 16 dimensions (`scripts/constant.py` TASK_INFO), in its order, with underscores (its result keys).
ALL_DIMENSIONS = ("subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
                  "dynamic_degree", "aesthetic_quality", "imaging_quality", "object_class", "multiple_objects",
                  "human_action", "color", "spatial_relationship", "scene", "appearance_style", "temporal_style",
                  "overall_consistency")
#: `QUALITY_LIST` of `scripts/constant.py`.
QUALITY_DIMENSIONS = ("subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
                      "aesthetic_quality", "imaging_quality", "dynamic_degree")
#: `SEMANTIC_LIST` of `scripts/constant.py`. VBench's semantic score is the weighted mean of all nine normalised
#: (weight 1 each), and its total score needs both: neither exists for a subset, so none is computed here.
SEMANTIC_DIMENSIONS = ("object_class", "multiple_objects", "human_action", "color", "spatial_relationship", "scene",
                       "appearance_style", "temporal_style", "overall_consistency")
#: `NORMALIZE_DIC` (min, max) and `DIM_WEIGHT` of `scripts/constant.py`, quality dimensions.
NORMALIZE = {"subject_consistency": (0.1462, 1.0), "background_consistency": (0.2615, 1.0),
             "temporal_flickering": (0.6293, 1.0), "motion_smoothness": (0.706, 0.9975),
             "dynamic_degree": (0.0, 1.0), "aesthetic_quality": (0.0, 1.0), "imaging_quality": (0.0, 1.0)}
WEIGHT = {"subject_consistency": 1.0, "background_consistency": 1.0, "temporal_flickering": 1.0,
          "motion_smoothness": 1.0, "aesthetic_quality": 1.0, "imaging_quality": 1.0, "dynamic_degree": 0.5}
#: Bumped when the rules of a dimension change.
VBENCH_METRICS_VERSION = "1"


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench's temporal-flickering score of one video: 1 - mean absolute difference of consecutive frames / 255.

    Args:
        frames: uint8 ``[T, H, W, C]`` (every decoded frame, T >= 2; channel order does not matter).

    Returns:
        ``(255 - mean_i mean|x_i+1 - x_i|) / 255``: 1 for a still video.

    Example:
        >>> still = np.full((4, 2, 2, 3), 7, np.uint8)
        >>> temporal_flickering(still)
        1.0
        >>> blink = np.stack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)])
        >>> temporal_flickering(blink)
        0.0
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"temporal flickering needs [T>=2, H, W, C] frames, got shape {frames.shape}")
    x = frames.astype(np.float32)
    # VBench: np.mean(cv2.absdiff(float32, float32)) per pair (a float32 mean), then the mean of those means
    maes = np.array([np.mean(np.abs(x[i] - x[i + 1])) for i in range(len(x) - 1)])
    return (255.0 - float(np.mean(maes))) / 255.0


def motion_smoothness(frames: np.ndarray, interpolated: np.ndarray) -> float:
    """VBench's motion-smoothness score of one video from AMT-S's interpolated frames (`vfi_score` + the
    normalisation of `motion_score`; `harness.features.amt` produces the frames).

    Args:
        frames: every decoded frame of the video, uint8 ``[T, H, W, C]``.
        interpolated: uint8 ``[K, H, W, C]``, the frame interpolated between even frames ``2i`` and ``2i + 2``
            (K = ceil(T / 2) - 1).

    Returns:
        ``(255 - mean_i mean|frames[2i + 1] - interpolated[i]|) / 255`` over ``i < K``: with an even T the last odd
        frame has no interpolated partner and is not compared, as in VBench.

    Example:
        >>> frames = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (0, 10, 20, 40, 40)])
        >>> interpolated = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (10, 30)])
        >>> round(motion_smoothness(frames, interpolated) * 255, 6)  # mean of |10-10| and |40-30|: 5
        250.0
    """
    frames, interpolated = np.asarray(frames), np.asarray(interpolated)
    if interpolated.ndim != 4 or len(interpolated) != (len(frames) + 1) // 2 - 1 or len(interpolated) == 0:
        raise ValueError(f"motion smoothness needs the {(len(frames) + 1) // 2 - 1} frames interpolated between the "
                         f"even frames of a {len(frames)}-frame video (at least 3), got shape {interpolated.shape}")
    odd = frames[1::2][:len(interpolated)]
    # VBench: np.mean(cv2.absdiff(uint8, uint8)) per frame (exact in float64), then the mean of those means
    diffs = [np.mean(np.abs(o.astype(np.int16) - p.astype(np.int16))) for o, p in zip(odd, interpolated)]
    return (255.0 - float(np.mean(np.array(diffs)))) / 255.0


def frame_consistency(features: torch.Tensor) -> tuple[float, int]:
    """Sum and count of VBench's per-frame consistency terms of one video (subject and background consistency).

    Args:
        features: ``[T, D]`` per-frame features (normalised here, as VBench does before comparing).

    Returns:
        ``(sum over i >= 1 of (max(0, cos(f_i-1, f_i)) + max(0, cos(f_0, f_i))) / 2, T - 1)``.

    Example:
        >>> frame_consistency(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        (1.0, 2)
    """
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"consistency needs [T>=2, D] features, got shape {tuple(features.shape)}")
    f = F.normalize(features.float(), dim=-1, p=2)
    previous = F.cosine_similarity(f[:-1], f[1:]).clamp(min=0.0)
    first = F.cosine_similarity(f[:1].expand_as(f[1:]), f[1:]).clamp(min=0.0)
    terms = (previous.double() + first.double()) / 2
    return float(terms.sum()), len(terms)


def dynamic_degree_frames(num_frames: int, fps: float) -> list[int]:
    """Indices of the frames VBench's dynamic degree compares: every ``max(1, round(fps / 8))``-th decoded frame
    (Python's round: half to even, so 12 fps keeps every 2nd frame, 20 fps every 2nd, 28 fps every 4th).

    Args:
        num_frames: decoded frames of the video.
        fps: its frame rate (what OpenCV reports for the file).

    Example:
        >>> dynamic_degree_frames(9, 16)
        [0, 2, 4, 6, 8]
    """
    return list(range(0, num_frames, max(1, round(fps / 8))))


def is_dynamic(scores: Sequence[float], min_side: int, num_frames: int) -> bool:
    """VBench's `DynamicDegree.check_move`: moving when at least ``round(4 * num_frames / 16)`` consecutive-pair
    flow scores (mean of the top 5% magnitudes) exceed ``6 * min_side / 256``.

    Args:
        scores: per consecutive pair of the sampled frames, `top_flow_magnitude(flow, 0.05)`.
        min_side: the shorter side of the (unpadded) frames in pixels.
        num_frames: how many frames were sampled (`dynamic_degree_frames`).

    Example:
        >>> is_dynamic([10.0, 10.0, 0.0, 10.0], min_side=256, num_frames=16)
        False
        >>> is_dynamic([10.0, 10.0, 7.0, 10.0], min_side=256, num_frames=16)
        True
    """
    threshold, needed = 6.0 * (min_side / 256.0), round(4 * (num_frames / 16.0))
    count = 0
    for score in scores:  # VBench's loop, kept as is: with needed == 0 any non-empty list is dynamic
        if score > threshold:
            count += 1
        if count >= needed:
            return True
    return False


def is_static(scores: Sequence[float], min_side: int, num_frames: int) -> bool:
    """VBench's `StaticFilter.check_static` (static_filter.py), which picks the temporal-flickering videos.

    Args:
        scores: per consecutive pair of all frames, then for (first, last) and (last, first), the mean of the top
            2% flow magnitudes.
        min_side: the shorter side of the frames in pixels.
        num_frames: the video's frame count.

    Returns:
        False when more than ``round(2 * num_frames / 16)`` consecutive pairs exceed ``3 * min_side / 256``, or
        either first/last pair exceeds that threshold times ``2 * round(2 * num_frames / 16)``.

    Example:
        >>> is_static([0.5] * 15 + [1.0, 1.0], min_side=256, num_frames=16)
        True
        >>> is_static([0.5] * 15 + [13.0, 1.0], min_side=256, num_frames=16)
        False
    """
    threshold, allowed = 3.0 * (min_side / 256.0), round(2 * (num_frames / 16.0))
    count = 0
    for score in scores[:-2]:
        if score > threshold:
            count += 1
        if count > allowed:
            return False
    return all(score <= threshold * allowed * 2 for score in scores[-2:])


class _DimensionScore(Accumulator):
    """A VBench dimension: a float64 total over a count (videos or frames), summed across ranks."""

    unit = "fraction"
    higher_is_better = True
    version = VBENCH_METRICS_VERSION

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            raise ValueError(f"{self.metric_name}: nothing was scored")
        return self.total / self.count


class VideoMeanScore(_DimensionScore):
    """A dimension that is the mean over videos of a per-video score (temporal flickering, aesthetic quality,
    dynamic degree): `update(per_video_scores)`.

    Args:
        name: the dimension's name (VBench's underscored key).
        description: how the value was computed, stored with it.
        kwargs: passed to `Accumulator`.

    Example:
        >>> m = VideoMeanScore("temporal_flickering")
        >>> m.update([0.9, 0.95])
        >>> m.update([1.0])
        >>> round(m.values()[0].value, 6)
        0.95
    """

    def __init__(self, name: str, description: str = "", **kwargs):
        super().__init__(**kwargs)
        self.metric_name, self.description = name, description

    def update(self, scores: Sequence[float]) -> None:
        scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
        self.total += scores.sum()
        self.count += scores.numel()


class FrameMeanScore(VideoMeanScore):
    """A dimension that is the mean over every frame of every video of a per-frame score (appearance style:
    VBench's ``sim / cnt``, frame-weighted, not a mean of per-video means): `update(per_frame_scores)`.

    Example:
        >>> m = FrameMeanScore("appearance_style")
        >>> m.update([0.2, 0.25, 0.3])  # a 3-frame video
        >>> m.update([0.1])  # a 1-frame video
        >>> round(m.values()[0].value, 6)
        0.2125
    """

    unit = "CLIP similarity"  # exp(logit_scale) * cos / 100: about 0..0.3, not a fraction


class VideoTextScore(VideoMeanScore):
    """Temporal style or overall consistency: the mean over videos of each video's ViCLIP video-text cosine
    (`update(per_video_cosines)`).

    Example:
        >>> m = VideoTextScore("overall_consistency")
        >>> m.update([0.2, 0.3])
        >>> round(m.values()[0].value, 6), m.values()[0].unit
        (0.25, 'cosine')
    """

    unit = "cosine"


class FrameConsistencyScore(_DimensionScore):
    """Subject or background consistency: `update(list of [T, D] per-video features)`; the value is the sum of
    every frame's term over the number of frames compared (VBench's ``sim / cnt``).

    Args:
        name: the dimension's name (VBench's underscored key).
        description: how the value was computed, stored with it.
        kwargs: passed to `Accumulator`.

    Example:
        >>> m = FrameConsistencyScore("subject_consistency")
        >>> m.update([torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])])
        >>> m.update([torch.tensor([[1.0, 0.0], [1.0, 0.0]])])
        >>> round(m.values()[0].value, 6)  # (1 + 0 + 1) / 3, not the mean of 0.5 and 1
        0.666667
    """

    def __init__(self, name: str, description: str = "", **kwargs):
        super().__init__(**kwargs)
        self.metric_name, self.description = name, description

    def update(self, videos: Sequence[torch.Tensor]) -> None:
        for features in videos:
            total, count = frame_consistency(features)
            self.total += total
            self.count += count


def quality_score(raw: Mapping[str, float]) -> tuple[float, list[str]]:
    """VBench's quality score over the quality dimensions given, and the quality dimensions missing.

    Each dimension is normalised as ``(raw - min) / (max - min) * weight`` (`get_nomalized_score`) and the score is
    their sum over the sum of their weights (`get_quality_score`). With every quality dimension present this is
    VBench's number; with some missing it is the same formula over those present, and the caller must say so.

    Args:
        raw: per quality dimension (underscored name), VBench's raw value in [0, 1].

    Returns:
        (score, missing dimensions in VBench's order).

    Example:
        >>> score, missing = quality_score({"subject_consistency": 1.0, "dynamic_degree": 0.5})
        >>> round(score, 6), missing[:2]
        (0.833333, ['background_consistency', 'temporal_flickering'])
    """
    unknown = sorted(set(raw) - set(QUALITY_DIMENSIONS))
    if unknown:
        raise ValueError(f"not VBench quality dimensions: {unknown}")
    if not raw:
        raise ValueError("no quality dimension to score")
    total = sum((raw[d] - NORMALIZE[d][0]) / (NORMALIZE[d][1] - NORMALIZE[d][0]) * WEIGHT[d] for d in raw)
    return total / sum(WEIGHT[d] for d in raw), [d for d in QUALITY_DIMENSIONS if d not in raw]


def quality_score_value(raw: Mapping[str, float]) -> MetricValue:
    """The quality score as a MetricValue: named `quality_score` only with all seven dimensions, otherwise
    `quality_score_partial`, whose description names the dimensions left out.

    Args:
        raw: per quality dimension present, VBench's raw value.

    Example:
        >>> quality_score_value({"subject_consistency": 1.0}).name
        'quality_score_partial'
    """
    score, missing = quality_score(raw)
    if not missing:
        return MetricValue("quality_score", score, True, "fraction", VBENCH_METRICS_VERSION,
                           description="VBench quality score: min/max-normalised, weighted mean of the 7 quality "
                                       "dimensions (scripts/cal_final_score.py)")
    return MetricValue("quality_score_partial", score, True, "fraction", VBENCH_METRICS_VERSION,
                       description=f"NOT VBench's quality score: VBench's normalisation and weights over "
                                   f"{', '.join(d for d in QUALITY_DIMENSIONS if d in raw)} only; missing "
                                   f"{', '.join(missing)}")
