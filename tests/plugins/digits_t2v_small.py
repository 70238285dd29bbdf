"""Test plugin for text-to-video submissions: inside a submission's sandboxed child only (`python -m harness.sandbox`),
`moving-digits-t2v-mini` asks for its first five prompts (one digit, each motion) instead of all fifty, so that the
submission test stays fast; the test gives the worker's and the direct run's task the same five (`small_suite`)."""

from __future__ import annotations

import sys
from pathlib import Path

from tasks.digits_t2v import MovingDigitsT2V

PROMPTS = 5


def small_suite(self) -> tuple[list[dict], set[str]]:
    records = _full_suite(self)[0][:PROMPTS]
    return records, {r["prompt_en"] for r in records}


_full_suite = MovingDigitsT2V.suite


if Path(sys.argv[0]).name == "sandbox.py" and Path(sys.argv[0]).parent.name == "harness":
    MovingDigitsT2V.suite = small_suite
