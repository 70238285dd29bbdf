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
from harness.errors import ArbenchError

MODALITY = "text-to-image"


class TextToImage(Method):
    """A text-to-image generator: uint8 (N, H, W, 3) images for the requests' prompts, in request order."""

    modality = MODALITY

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        """uint8 (N, H, W, 3) images for the requests' prompts, in request order."""

    def check_prompts(self, requests: Sequence[Request]) -> list[str]:
        """The requests' prompts; refuses (naming the first requests) any request without a text prompt."""
        bad = [r.id for r in requests if not isinstance(r.condition.get("prompt"), str)]
        if bad:
            raise ArbenchError(f"{self.name} needs a text prompt in every request's condition; "
                               f"requests {bad[:5]} have none. Use a text-to-image task.")
        return [r.condition["prompt"] for r in requests]
