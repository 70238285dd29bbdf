"""The text-to-image protocol (GenEval and other text-to-image tasks drive it; baselines implement it).

Each request's condition carries at least {"prompt": str}; GenEval adds "tag", "prompt_index" and
"sample_index". `generate` returns one uint8 RGB image per request, stacked as an array (N, H, W, 3), each
drawn from a random stream seeded by its `Request.seed`, so that outputs do not depend on batching.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

import numpy as np

from harness.api import Method, Request

MODALITY = "text-to-image"


class TextToImage(Method):
    """A text-to-image generator: uint8 (N, H, W, 3) images for the requests' prompts, in request order."""

    modality = MODALITY

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        """uint8 (N, H, W, 3) images for the requests' prompts, in request order."""
