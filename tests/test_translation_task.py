"""Translation tasks end to end: `arbench score` on a local WMT test set, bad input, offline test sets,
the sentence adapter, nat-mini with latency and speedup, and the speed measurement on fake models."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from sacrebleu.dataset import DATASETS

from harness.api import Method
from harness.errors import InputError, MissingAssetError
from harness.metrics.text import bleu_score, chrf_pp_score, legacy_tokenized_bleu_score


def bleu(hypotheses, references) -> float:
    return bleu_score(hypotheses, references).score


def chrf_pp(hypotheses, references) -> float:
    return chrf_pp_score(hypotheses, references).score
from harness.registry import TASKS, register_method
from harness.runner import RunOptions, Runner
from harness.store import Store
from tasks import translation

N_WMT14 = 3003


def copy_sentences(sentences: list[str]) -> list[str]:
    """A "translator" for the adapter test: returns its input."""
    return list(sentences)


def _runner(results) -> Runner:
    return Runner(Store(f"sqlite:///{results / 'arbench.db'}"), RunOptions(progress=False))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def wmt14(tmp_path):
    refs = [f"Der {i}. Satz über das Open-Source-Projekt ist {'gut' if i % 3 else 'schlecht'}." for i in range(N_WMT14)]
    hyps = [f"Der {i}. Satz über das Open-Source-Projekt ist {'gut' if i % 2 else 'schön'}." for i in range(N_WMT14)]
    return SimpleNamespace(refs=refs, hyps=hyps, ref=_write(tmp_path / "ref.de", refs),
                           hyp=_write(tmp_path / "hyp.de", hyps))


def test_score_stores_sacrebleu_chrf_and_legacy_bleu(results_dir, wmt14):
    runner = _runner(results_dir)
    result = runner.score("wmt14-en-de", wmt14.hyp, {"reference": str(wmt14.ref), "bootstrap": 50})
    values = {m.name: m for m in result.metrics}
    assert values["bleu"].value == pytest.approx(bleu(wmt14.hyps, wmt14.refs), abs=1e-9)
    assert values["bleu"].ci_low < values["bleu"].value < values["bleu"].ci_high
    assert values["chrf_pp"].value == pytest.approx(chrf_pp(wmt14.hyps, wmt14.refs), abs=1e-9)
    legacy = legacy_tokenized_bleu_score(wmt14.hyps, wmt14.refs, lang="de")
    assert values["legacy_tok_bleu"].value == pytest.approx(legacy.score)
    assert values["legacy_tok_bleu"].value > values["bleu"].value  # compound splitting inflates it
    assert "tok:13a" in values["bleu"].description and "LEGACY" in values["legacy_tok_bleu"].description
    (record,) = runner.store.records()
    assert "reference_sha256:" in record["signature"] and "sacrebleu.bleu:nrefs:1/bs:50" in record["signature"]
    assert "compound-split:yes" in record["signature"]


def test_bad_hypothesis_files_are_refused_and_nothing_is_stored(results_dir, wmt14, tmp_path):
    runner = _runner(results_dir)
    settings = {"reference": str(wmt14.ref)}
    cases = {
        "has 3002 lines but the reference has 3003": _write(tmp_path / "short.txt", wmt14.hyps[:-1]),
        r"1 empty line\(s\) \(line 6\)": _write(tmp_path / "empty.txt", wmt14.hyps[:5] + [""] + wmt14.hyps[6:]),
        "folder": tmp_path,
    }
    for message, path in cases.items():
        with pytest.raises(InputError, match=message):
            runner.score("wmt14-en-de", path, settings)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("\n".join(wmt14.hyps[:2] + ["Der Satz über"] + wmt14.hyps[3:]).encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 .* line 1.*iconv"):
        runner.score("wmt14-en-de", latin1, settings)
    with pytest.raises(InputError, match="2737 lines, but newstest2014, the full 3,003-line set"):
        runner.score("wmt14-en-de", wmt14.hyp, {"reference": str(_write(tmp_path / "r", wmt14.refs[:2737]))})
    assert runner.store.records() == []


def test_test_sets_from_sacrebleu_cache_or_a_clear_message(results_dir, wmt14, tmp_path, monkeypatch):
    dataset = DATASETS["wmt14/full"]
    monkeypatch.setattr(dataset, "_outdir", str(tmp_path / "sacrebleu" / "wmt14" / "full"))
    runner = _runner(results_dir)
    with pytest.raises(MissingAssetError, match="sacrebleu -t wmt14/full -l en-de --echo src"):
        runner.score("wmt14-en-de", wmt14.hyp)
    with pytest.raises(MissingAssetError, match="prepare-iwslt14.sh"):
        runner.score("iwslt14-de-en", wmt14.hyp)
    (tmp_path / "sacrebleu" / "wmt14" / "full").mkdir(parents=True)
    _write(tmp_path / "sacrebleu/wmt14/full/wmt14_full.en-de.ref", wmt14.refs)
    _write(tmp_path / "sacrebleu/wmt14/full/wmt14_full.en-de.src", [f"Sentence {i}." for i in range(N_WMT14)])
    result = runner.score("wmt14-en-de", wmt14.hyp, {"bootstrap": 0})
    assert result.metrics[0].value == pytest.approx(bleu(wmt14.hyps, wmt14.refs))
    assert len(runner.store.records()) == 1


@pytest.fixture
def short_test_sets(monkeypatch):
    """Shrink the line counts the specs expect, so that the tests below score 40 lines, not thousands."""
    for name, spec in list(translation.TEST_SETS.items()):
        monkeypatch.setitem(translation.TEST_SETS, name, dataclasses.replace(spec, lines=40))


def test_iwslt14_is_scored_lower_cased(results_dir, tmp_path, short_test_sets):
    refs = [f"das ist satz nummer {i} ." for i in range(40)]
    hyps = [line.upper() for line in refs]
    result = _runner(results_dir).score("iwslt14-de-en", _write(tmp_path / "hyp.en", hyps),
                                        {"reference": str(_write(tmp_path / "ref.en", refs)), "bootstrap": 0})
    assert {m.name: m.value for m in result.metrics}["bleu"] == pytest.approx(100.0)


def test_adapter_scores_any_sentence_translator(results_dir, tmp_path, short_test_sets):
    sources = [f"Propoziția {i} este aici." for i in range(40)]
    refs = [f"Propoziția {i} este acolo." for i in range(40)]
    settings = {"reference": str(_write(tmp_path / "ref.en", refs)), "source": str(_write(tmp_path / "src.ro", sources)),
                "function": "test_translation_task:copy_sentences", "bootstrap": 0}
    result = _runner(results_dir).run("wmt16-ro-en", "sentences-translator", settings)
    assert result.metrics[0].value == pytest.approx(bleu(sources, refs))
    with pytest.raises(InputError, match="package.module:function"):
        _runner(results_dir).run("wmt16-ro-en", "sentences-translator", {**settings, "function": "nonsense"})


def test_running_a_method_needs_the_source_side(results_dir, wmt14):
    with pytest.raises(InputError, match="source=SRC.txt"):
        _runner(results_dir).run("wmt14-en-de", "sentences-translator",
                                 {"reference": str(wmt14.ref), "function": "test_translation_task:copy_sentences"})


def test_bundled_checkpoints_refuse_other_test_sets(results_dir, short_test_sets, tmp_path):
    settings = {"reference": str(_write(tmp_path / "ref.de", ["Ein Satz."] * 40)),
                "source": str(_write(tmp_path / "src.en", ["A sentence."] * 40))}
    with pytest.raises(InputError, match="nat-mini controlled language only"):
        _runner(results_dir).run("wmt14-en-de", "vanilla-nat", settings)
    with pytest.raises(InputError, match="translates en-de, but the task asks for ro-en"):
        _runner(results_dir).run("wmt16-ro-en", "ar-transformer", settings)
    assert _runner(results_dir).store.records() == []


def test_nat_mini_run_stores_bleu_latency_and_speedup(results_dir):
    settings = {"latency_sentences": 3, "timing_rounds": 1, "timing_warmup": 1, "max_batch": 500, "bootstrap": 0}
    result = _runner(results_dir).run("nat-mini", "cmlm", {**settings, "iterations": 2})
    values = {m.name: m for m in result.metrics}
    assert {"bleu", "chrf_pp", "legacy_tok_bleu", "latency_b1_ms", "latency_b1_ms_baseline", "throughput_sent_s",
            "speedup_b1", "speedup_max_batch", "bleu_delta_vs_baseline"} <= set(values)
    assert values["bleu"].value > 30
    assert values["speedup_b1"].ci_low <= values["speedup_b1"].value <= values["speedup_b1"].ci_high
    (record,) = _runner(results_dir).store.records()
    assert "method.distilled:yes" in record["signature"] and "method.iterations:2" in record["signature"]
    assert "timing.baseline:ar-transformer" in record["signature"]


class FakeClock:
    """Stands in for time.perf_counter: fake translators advance it by their declared cost per call."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


@dataclass
class CostConfig:
    seconds_per_call: float = 0.004


class FakeTranslator(Method):
    modality = "translation"
    Config = CostConfig

    def generate(self, requests):
        CLOCK.now += self.config.seconds_per_call
        return [r.condition["source"] for r in requests]


@dataclass
class SlowCostConfig:
    seconds_per_call: float = 0.012


@register_method("test-fake-ar")
class FakeAR(FakeTranslator):
    Config = SlowCostConfig


def test_speed_measurement_against_the_baseline_on_fake_models(monkeypatch):
    monkeypatch.setattr(time, "perf_counter", CLOCK)
    task = TASKS.get("nat-mini")(TASKS.get("nat-mini").Config(
        latency_sentences=8, timing_rounds=2, timing_warmup=1, max_batch=250, baseline="test-fake-ar"))
    ctx = SimpleNamespace(device="cpu", log=lambda message: None, extra_provenance={})
    values = {m.name: m for m in task.measure_speed(FakeTranslator(), ctx)}
    assert values["speedup_b1"].value == pytest.approx(3.0, rel=1e-9)
    assert values["speedup_b1"].ci_low == pytest.approx(3.0, rel=1e-9)
    assert values["speedup_max_batch"].value == pytest.approx(3.0, rel=1e-9)
    assert values["latency_b1_ms"].value == pytest.approx(4.0, rel=1e-9)
    assert values["latency_b1_ms_baseline"].value == pytest.approx(12.0, rel=1e-9)
    assert values["throughput_sent_s"].value == pytest.approx(500 / (2 * 0.004), rel=1e-9)
    assert values["bleu_delta_vs_baseline"].value == 0.0  # both fakes copy the source
    assert "timing_hardware" in ctx.extra_provenance
    itself = {m.name: m.value for m in task.measure_speed(FakeAR(), ctx)}
    assert itself["speedup_b1"] == 1.0 and "latency_b1_ms_baseline" not in itself
