"""Test plugin for GenEval submissions: inside a submission's sandboxed child only (`python -m harness.sandbox`),
GenEval's asset check is skipped, because its detector and CLIP weights cannot be downloaded offline and the child
never scores (the worker does, with a scripted detector in the test). Registers a tiny text-to-image method."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from harness.registry import register_method
from harness.protocols.text_to_image import TextToImage
from tasks.geneval import GenEval

if Path(sys.argv[0]).name == "sandbox.py" and Path(sys.argv[0]).parent.name == "harness":
    GenEval.require_assets = lambda self: None


@register_method("geneval-sandbox-t2i")
class SandboxT2I(TextToImage):
    description = "test: seeded noise images (6 x 6)"

    def generate(self, requests):
        return np.stack([np.random.default_rng(r.seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
                         for r in requests])
