"""LLMVoX + WavTokenizer decoder against upstream's own code (golden file from tests/golden/make_llmvox.py), the
checkpoint readers (files written in upstream's layouts, read through `load_llmvox`), the method's streaming and
request handling, and the streaming metrics (first-packet latency, chunk RTF) with a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.tts import llmvox as lv
from baselines.tts.wavtokenizer import CODEBOOK_KEY, WavTokenizerConfig, WavTokenizerDecoder
from harness.api import Request
from harness.errors import ArbenchError, InputError, MissingAssetError
from harness.timing import StreamMeasurement, stream_timing, streaming_summary
from golden.golden_weights import seeded_state, seeded_tensor
from golden.make_llmvox import force_end

torch.set_num_threads(1)  # tiny networks: threads only add overhead on the shared test machine
GOLDEN = dict(np.load(Path(__file__).parent / "golden" / "llmvox" / "golden.npz"))
TEXT_DIM, VOCAB, BLOCK, END_AT, INITIAL_DUMP, MAX_DUMP, SEED = (int(x) for x in GOLDEN["settings"])
SMALL = lv.LLMVoXConfig(n_layer=2, n_head=4, n_embd=TEXT_DIM + 512, block_size=BLOCK, vocab_size=VOCAB,
                        text_dim=TEXT_DIM)
SMALL_WAV = WavTokenizerConfig(codebook_size=VOCAB, dim=64, intermediate_dim=96, num_layers=2, n_fft=64,
                               hop_length=16)
WORDS = ["Hello", "world", "speech"]  # upstream's LLM tokens "Hello", "world", "speech<|eot_id|>"


def layout(key: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads(str(GOLDEN[key])).items()}


def upstream_states() -> tuple[dict, dict, torch.Tensor]:
    """The golden script's seeded weights, by upstream's names: nanoGPT, WavTokenizer (decoder + codebook), ByT5."""
    gpt = force_end(seeded_state({k: torch.zeros(v) for k, v in layout("gpt_layout").items()}, SEED))
    wav = seeded_state({k: torch.zeros(v) for k, v in layout("wav_layout").items()}, SEED + 1)
    wav[CODEBOOK_KEY] = seeded_tensor(CODEBOOK_KEY, (VOCAB, 512), SEED + 2)
    return gpt, wav, seeded_tensor("shared.weight", (384, TEXT_DIM), SEED + 3)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The seeded weights saved as upstream's files: train.py's checkpoint (torch.compile prefix, optimizer state),
    a Lightning WavTokenizer checkpoint (with encoder and discriminator tensors LLMVoX never uses), a HF T5 bin."""
    gpt, wav, byt5 = upstream_states()
    root = tmp_path_factory.mktemp("llmvox")
    args = dict(n_layer=2, n_head=4, n_embd=TEXT_DIM + 512, block_size=BLOCK, bias=False, vocab_size=VOCAB,
                dropout=0.0)
    torch.save({"model": {"_orig_mod." + k: v for k, v in gpt.items()}, "model_args": args, "iter_num": 7,
                "optimizer": {"state": {}, "param_groups": [{"lr": 3e-4}]}, "config": {"batch_size": 2}},
               root / "ckpt.pt")
    extra = {"feature_extractor.encodec.encoder.model.0.conv.conv.weight": torch.zeros(4, 1, 7),
             "multiperioddisc.discriminators.0.convs.0.weight": torch.zeros(2, 1, 5, 1),
             "head.istft.window": torch.hann_window(64),
             "feature_extractor.encodec.quantizer.vq.layers.0._codebook.cluster_size": torch.zeros(VOCAB)}
    torch.save({"state_dict": {**wav, **extra}, "epoch": 3, "global_step": 10}, root / "wavtokenizer.ckpt")
    torch.save({"shared.weight": byt5, "encoder.embed_tokens.weight": byt5, "lm_head.weight": byt5}, root / "t5.bin")
    return root / "ckpt.pt", root / "wavtokenizer.ckpt", root / "t5.bin"


@pytest.fixture(scope="module")
def models(checkpoints) -> lv.LLMVoXModels:
    return lv.load_llmvox(*checkpoints, wav_cfg=SMALL_WAV)


def small_method(models, **settings) -> lv.LLMVoX:
    config = lv.LLMVoXSettings(**{"initial_dump_size_1": INITIAL_DUMP, "max_dump_size": MAX_DUMP, **settings})
    return lv.LLMVoX(config, models=models)


# -- layouts and the text front end -----------------------------------------------------------------------------
def test_layouts_match_upstream_at_golden_and_released_sizes():
    def shapes(module):
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    with torch.device("meta"):
        assert shapes(lv.LLMVoXDecoder(SMALL)) == layout("gpt_layout")
        assert shapes(lv.LLMVoXDecoder(lv.LLMVoXConfig())) == layout("gpt_layout_released")
        for ours, key in ((WavTokenizerDecoder(SMALL_WAV), "wav_layout"),
                          (WavTokenizerDecoder(), "wav_layout_released")):
            expected = {k: v for k, v in layout(key).items() if k != "head.istft.window"}  # recomputed, not loaded
            assert {k: v for k, v in shapes(ours).items() if k != CODEBOOK_KEY} == expected
    assert sum(p.numel() for p in lv.LLMVoXDecoder(lv.LLMVoXConfig()).parameters() if p.dim() > 0) > 30e6


def test_text_ids_and_added_embedding_rows_match_upstream(models):
    tokenizer = lv.byt5_tokenizer()
    assert lv.text_ids(WORDS, tokenizer) == GOLDEN["text_ids"].tolist()
    np.testing.assert_allclose(models.text_embedding[384:].numpy(), GOLDEN["added_text_rows"], rtol=1e-6, atol=1e-7)
    # upstream's clean_text drops the period after a number, so "3." ends no sentence (as in its server)
    assert lv.sentences("Hi -- there... It's #1 & 2,000/3.  Next one. tail") == [
        ["Hi", "there", "pause", "It's", "number", "1", "and", "2000", "slash", "3", "Next", "one."], ["tail"]]


# -- golden: one step, the vocoder, the streamed decode ---------------------------------------------------------
def test_cached_step_logits_match_upstream(models):
    x, cache, logits = torch.from_numpy(GOLDEN["step_input"]), None, []
    with torch.no_grad():
        for i in range(x.shape[1]):
            out, cache = models.decoder.step(x[:, i:i + 1], cache)
            logits.append(out[0])
        causal, _ = models.decoder.step(x)  # the whole sequence at once (causal) gives the last row too
    np.testing.assert_allclose(torch.stack(logits).numpy(), GOLDEN["step_logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(causal[0].numpy(), GOLDEN["step_logits"][-1], rtol=1e-5, atol=1e-5)


def test_vocoder_waveform_matches_upstream(models):
    with torch.no_grad():
        audio = lv.decode_tokens(models.wavtokenizer, GOLDEN["codes"][0].tolist())
    assert audio.shape == GOLDEN["audio"].shape == (20 * 16,)
    np.testing.assert_allclose(audio, GOLDEN["audio"], rtol=1e-4, atol=1e-4 * np.abs(GOLDEN["audio"]).max())


def test_streamed_decode_matches_upstream_token_for_token(models):
    schedule = lv.ChunkSchedule(INITIAL_DUMP, MAX_DUMP)
    with torch.no_grad():
        chunks = list(lv.stream_tokens_to_audio(models, GOLDEN["text_ids"].tolist(), schedule, BLOCK))
    tokens = [t for _, chunk in chunks for t in chunk]
    assert tokens == GOLDEN["tokens"].tolist() and tokens[-1] == lv.EOA_TOKEN_ID and len(tokens) == END_AT + 1
    assert [len(c) for _, c in chunks] == GOLDEN["chunk_sizes"].tolist() == [4, 12, 15]
    assert schedule.size == MAX_DUMP  # x3 per chunk and at the sentence's end, capped (4 -> 12 -> 36)
    audio = np.concatenate([a for a, _ in chunks])
    ref = GOLDEN["stream_audio"]
    np.testing.assert_allclose(audio, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_method_streams_the_generated_waveform_and_ignores_batching(models):
    method = small_method(models)
    request = Request(0, "u0", 5, {"text": "Hello world speech"})
    chunks = list(method.stream(request))
    assert [len(a) for a, _ in chunks] == [16 * n for n in (4, 12, 15)] and {r for _, r in chunks} == {24000}
    (alone, rate), = method.generate([request])
    np.testing.assert_array_equal(alone, np.concatenate([a for a, _ in chunks]))
    batch = method.generate([Request(1, "u1", 9, {"text": "other words here."}),
                             Request(0, "u0", 77, request.condition)])
    np.testing.assert_array_equal(batch[1][0], alone)  # greedy: neither batching nor the seed changes a waveform
    assert type(method).streaming and rate == 24000
    assert not lv.Method.streaming


def test_sentences_alternate_replicas_and_reset_state(models):
    method = small_method(models, initial_dump_size_2=2)
    chunks = [len(a) // 16 for a, _ in method.stream(Request(0, "u", 0, {"text": "Hello world. speech"}))]
    # sentence 1 on replica 1 (4, 12, ...), sentence 2 on replica 2 (2, 6, 18, ...), each from a fresh state
    assert chunks[:2] == [4, 12] and 2 in chunks[2:] and sum(chunks) == 2 * (END_AT + 1)


def test_bad_input_and_missing_weights(models, tmp_path, monkeypatch, checkpoints):
    with pytest.raises(InputError, match="no words"):
        list(small_method(models).stream(Request(0, "empty", 0, {"text": "  "})))
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    with pytest.raises(MissingAssetError) as err:
        lv.LLMVoX().weight_files()
    for name in ("ckpt_english_tiny.pt", "wavtokenizer_large_speech_320_24k.ckpt", "charsiu_g2p_multilingual"):
        assert name in str(err.value)
    ckpt, wav, t5 = checkpoints
    with pytest.raises(ArbenchError, match="not an LLMVoX checkpoint"):
        lv.load_llmvox(t5, wav, t5, wav_cfg=SMALL_WAV)
    with pytest.raises(ArbenchError, match="does not match"):
        lv.load_llmvox(ckpt, wav, t5)  # released WavTokenizer shape, small file


# -- streaming metrics ------------------------------------------------------------------------------------------
class FakeClock:
    """Each reading is 0.25 s after the previous one."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_stream_timing_with_a_fake_clock(models):
    method = small_method(models)
    measured = stream_timing(method.stream, [Request(0, "u", 0, {"text": "Hello world speech"})],
                             lambda chunk: len(chunk[0]) / chunk[1], warmup=1, clock=FakeClock())
    (m,) = measured
    assert m.ready == (0.25, 0.5, 0.75)  # one reading before the call, one per chunk
    assert m.durations == pytest.approx((64 / 24000, 192 / 24000, 240 / 24000))
    assert m.chunk_rtf == pytest.approx((0.25 * 24000 / 64, 0.25 * 24000 / 192, 0.25 * 24000 / 240))
    summary = streaming_summary(measured)
    assert summary["first_packet_p50"] == summary["first_packet_p95"] == 0.25 and summary["chunks"] == 3
    assert summary["chunk_rtf_p50"] == pytest.approx(31.25)


def test_tts_task_reports_streaming_metrics_for_streaming_methods_only(models, tmp_path):
    from run_context_double import FakeContext
    from tasks.tts import STREAMING_METRICS_VERSION, SeedTTSEnglish, TTSConfig
    from test_tts_task import write_seed_set

    task = SeedTTSEnglish(TTSConfig(list_path=str(write_seed_set(tmp_path / "set", n=2)), rtf_items=2,
                                    rtf_warmup=0))
    metrics = {m.name: m for m in task.streaming_latency(small_method(models), FakeContext(tmp_path),
                                                         clock=FakeClock())}
    assert set(metrics) == {"first_packet_p50", "first_packet_p95", "chunk_rtf_p50", "chunk_rtf_p95"}
    assert metrics["first_packet_p50"].value == 0.25 and metrics["first_packet_p50"].unit == "s"
    rtf = metrics["chunk_rtf_p95"]
    assert rtf.version == STREAMING_METRICS_VERSION and not rtf.higher_is_better and rtf.unit == "x"
    assert "2 utterances" in metrics["first_packet_p95"].description
    with pytest.raises(ValueError, match="one ready time"):
        StreamMeasurement((), ())
