"""Metrics: pure-function cores plus accumulators that do not depend on batch size or world size.

Every metric declares `higher_is_better`, its unit and its version (see `harness.metrics.base`).
Task-specific metric modules live beside this file; their public functions are re-exported here.
"""

from harness.metrics.base import Accumulator, MetricValue
from harness.metrics.frechet import FeatureStatistics, FrechetDistance, feature_statistics, frechet_distance
from harness.metrics.image import InceptionScore, PrecisionRecall, inception_score, precision_recall
from harness.metrics.geneval import GenEvalRules, GenEvalScore, evaluate_image, keep_detections, relative_position
from harness.metrics.speech import WordErrorRate, cosine_similarity, mean_utterance_wer, per_utterance_wer, wer
from harness.metrics.text import (BLEUScore, CHRFppScore, LegacyTokenizedBLEUScore, bleu_score, chrf_pp_score,
                                  legacy_tokenized_bleu_score)
from harness.metrics.video import clip_statistics, fvd, fvd_from_clips, load_video_samples
from harness.metrics.vbench import (FrameConsistencyScore, VideoMeanScore, dynamic_degree_frames, frame_consistency,
                                    is_dynamic, is_static, motion_smoothness, quality_score, quality_score_value,
                                    temporal_flickering)

__all__ = [
    "Accumulator", "MetricValue",
    "FeatureStatistics", "FrechetDistance", "feature_statistics", "frechet_distance",
    "InceptionScore", "PrecisionRecall", "inception_score", "precision_recall",
    "GenEvalRules", "GenEvalScore", "evaluate_image", "keep_detections", "relative_position",
    "WordErrorRate", "cosine_similarity", "mean_utterance_wer", "per_utterance_wer", "wer",
    "BLEUScore", "CHRFppScore", "LegacyTokenizedBLEUScore",
    "bleu_score", "chrf_pp_score", "legacy_tokenized_bleu_score",
    "clip_statistics", "fvd", "fvd_from_clips", "load_video_samples",
    "FrameConsistencyScore", "VideoMeanScore", "frame_consistency", "quality_score", "quality_score_value",
    "temporal_flickering", "motion_smoothness", "dynamic_degree_frames", "is_dynamic", "is_static",
]
