"""Prompt suites by category (Spec-Bench style): validation naming lines, the bundled suite, and
per-category speedups with intervals stored as metrics."""

from __future__ import annotations

import json

import pytest

from harness.errors import InputError
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, BUNDLED_SUITE, build_suite, read_prompts


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("rows,message", [
    ([{"id": "a", "category": "qa", "prompt": "x"}, {"id": "b", "prompt": "y"}], r":2 has no \"category\""),
    ([{"id": "a", "category": "", "prompt": "x"}], r":1 has an invalid \"category\""),
    ([{"id": "a", "category": "q a/b", "prompt": "x"}], r":1 has an invalid \"category\""),
    ([{"id": "a", "category": "qa", "prompt": "x"}, "", {"id": "b", "category": "qa", "prompt": "  "}],
     r":3 has an empty prompt"),
    ([{"id": "a", "category": "qa", "prompt_ids": []}], r":1: prompt_ids must be"),
    ([{"id": "a", "category": "qa", "prompt": "x"}, {"id": "a", "category": "rag", "prompt": "y"}],
     r":2 repeats id 'a' of line 1"),
    (["[1, 2]"], r":1 is not a JSON object"),
])
def test_bad_suites_are_refused_naming_the_line(tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        read_prompts(_write(tmp_path / "suite.jsonl", rows))


def test_bundled_suite_is_built_from_the_held_out_prompts():
    source = [json.loads(line) for line in BUNDLED_PROMPTS.read_text().splitlines()]
    built = build_suite(source)
    assert [json.loads(line) for line in BUNDLED_SUITE.read_text().splitlines()] == built
    rows = read_prompts(BUNDLED_SUITE)
    categories = [r["category"] for r in rows]
    assert sorted(set(categories)) == ["narrative", "poetry", "prophecy", "retrieval", "wisdom"]
    assert set(categories[:5]) == set(categories)  # interleaved: the first 5 prompts cover every category
    for row in rows:
        if row["category"] == "retrieval":
            text = bytes(row["ids"]).decode()
            *context, question = text.split("\n")
            assert len(context) == 3 and context[-1].startswith(question) and len(question) >= 20


def test_per_category_speedups_with_intervals_are_stored(tmp_path):
    from harness.registry import METHODS
    from run_context_double import FakeContext
    from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

    task = DecodingSpeedupMini(MiniConfig(max_prompts=5, max_new_tokens=12, batch_sizes=(1,), rounds=1, warmup=0))
    method = METHODS.get("prompt-lookup")()
    task.check_method(method)
    metrics = {m.name: m for m in task.run(method, FakeContext())}
    for category in ("poetry", "wisdom", "prophecy", "narrative", "retrieval"):
        m = metrics[f"speedup_{category}"]
        assert m.ci_low is not None and m.ci_low <= m.value <= m.ci_high and m.unit == "x"
    assert MiniConfig().prompts == str(BUNDLED_SUITE) and len(task.requests()) == 5
