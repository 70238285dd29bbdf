"""The text-to-video protocol (VBench drives it; text-to-video methods implement it).

Each request's condition carries {"prompt": str, "num_frames": int, "height": int, "width": int, "fps": int}; the
VBench task adds "prompt_index" and "sample_index". `generate` returns one uint8 RGB video per request, stacked as
an array (N, T, H, W, 3) with T, H and W as the condition asks, each drawn from a random stream seeded by its
`Request.seed`, so that outputs do not depend on batching.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

import numpy as np

from harness.api import Method, Request

MODALITY = "text-to-video"


class TextToVideo(Method):
    """A text-to-video generator: uint8 (N, T, H, W, 3) videos for the requests' prompts, in request order."""

    modality = MODALITY

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        """uint8 (N, T, H, W, 3) videos for the requests' prompts, in request order."""
