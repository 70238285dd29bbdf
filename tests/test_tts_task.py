"""TTS task: audio checks and resampling, list parsing, sample validation, failure accounting, and the offline
smoke test end to end (espeak-ng audio, real Whisper-base transcripts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness.errors import InputError
from harness.features.audio import SAMPLE_RATE, to_16k_mono
from tasks.tts import SeedTTSEnglish, TTSConfig, parse_librispeech_pc_list, parse_seed_list, read_audio
from run_context_double import FakeContext

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_resampling_to_16k_preserves_a_tone():
    out = to_16k_mono(tone(44100), 44100)
    assert out.shape == (8000,) and out.dtype == np.float32
    expected = tone(SAMPLE_RATE)
    np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=2e-3)
    assert to_16k_mono(tone(16000), 16000) == pytest.approx(tone(16000))


def test_stereo_is_averaged(tmp_path):
    left, right = tone(24000), tone(24000, freq=880.0)
    sf.write(tmp_path / "a.wav", np.stack([left, right], axis=1), 24000)
    audio = read_audio(tmp_path / "a.wav")
    assert audio.problem is None and "2 channels averaged" in audio.flags and audio.source_rate == 24000
    np.testing.assert_allclose(audio.samples, to_16k_mono((left + right) / 2, 24000), atol=1e-4)  # PCM16 file


@pytest.mark.parametrize("content, problem", [
    (None, "missing"),
    (np.zeros(0, dtype=np.float32), "empty"),
    (np.zeros(1000, dtype=np.float32), "silent"),
    (np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), "NaN"),
    (b"not a wav file", "unreadable"),
])
def test_bad_audio_is_reported_not_raised(tmp_path, content, problem):
    path = tmp_path / "x.wav"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        sf.write(path, content, 16000, subtype="FLOAT")
    audio = read_audio(path)
    assert audio.samples is None and problem in audio.problem


def test_clipping_is_flagged_but_scored(tmp_path):
    sf.write(tmp_path / "c.wav", np.clip(4 * tone(16000), -1, 1), 16000)
    audio = read_audio(tmp_path / "c.wav")
    assert audio.problem is None and "clipped" in audio.flags


def write_seed_set(root: Path, n: int = 3) -> Path:
    (root / "prompt-wavs").mkdir(parents=True)
    lines = []
    for i in range(n):
        sf.write(root / "prompt-wavs" / f"p{i}.wav", tone(16000, freq=300 + 50 * i), 16000)
        lines.append(f"utt{i}|prompt text {i}|prompt-wavs/p{i}.wav|Target sentence number {i}.")
    (root / "meta.lst").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "meta.lst"


def test_seed_list_parsing_and_errors(tmp_path):
    items = parse_seed_list(write_seed_set(tmp_path / "set"))
    assert [i.id for i in items] == ["utt0", "utt1", "utt2"]
    assert items[1].prompt_wav == tmp_path / "set" / "prompt-wavs" / "p1.wav"
    assert items[1].text == "Target sentence number 1." and items[1].prompt_text == "prompt text 1"
    bad = tmp_path / "bad.lst"
    bad.write_text("a|b|c\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.lst:1: expected 4 or 5"):
        parse_seed_list(bad)
    bad.write_bytes("u1|p|x.wav|caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"not UTF-8 \(line 1.*iconv"):
        parse_seed_list(bad)
    bad.write_text("u1|p|x.wav|one\nu1|p|x.wav|two\n", encoding="utf-8")
    with pytest.raises(InputError, match="appears twice"):
        parse_seed_list(bad)


def test_librispeech_pc_list_parsing(tmp_path):
    path = tmp_path / "ls.lst"
    path.write_text("1089-134686-0001\t3.1\tStuff it into you.\t1089-134686-0002\t6.2\tHello there, Mr. Brown.\n",
                    encoding="utf-8")
    (item,) = parse_librispeech_pc_list(path, tmp_path / "test-clean")
    assert item.id == "1089-134686-0002" and item.text == "Hello there, Mr. Brown."
    assert item.prompt_wav == tmp_path / "test-clean" / "1089" / "134686" / "1089-134686-0001.flac"


class FakeASR:
    """Returns the reference text of the utterance whose tone frequency it hears (a deterministic stand-in)."""

    name, weights_sha256 = "fake", "0"

    def transcribe(self, audio: np.ndarray) -> str:
        peak = np.argmax(np.abs(np.fft.rfft(audio))) * SAMPLE_RATE / len(audio)
        return f"target sentence number {int(round((peak - 300) / 50))}"


class FakeSpeaker:
    def similarity(self, audio, reference) -> float:
        return 0.5


def test_missing_file_scores_100_percent_and_is_listed(tmp_path, monkeypatch):
    task = SeedTTSEnglish(TTSConfig(list_path=str(write_seed_set(tmp_path / "set")), utmos=False))
    monkeypatch.setattr(task, "recognizer", lambda device="cpu": FakeASR())
    monkeypatch.setattr(task, "speaker_encoder", lambda device="cpu": FakeSpeaker())
    gen = tmp_path / "gen"
    gen.mkdir()
    sf.write(gen / "utt0.wav", tone(22050, freq=300), 22050)
    sf.write(gen / "utt2.wav", tone(24000, freq=400), 24000)
    samples = task.load_samples(gen)
    assert samples["utt1"] is None
    ctx = FakeContext(tmp_path)
    metrics = {m.name: m.value for m in task.score(samples, ctx)}
    assert metrics["wer_seed_utt_mean"] == pytest.approx(100 / 3)  # 0%, 100% (missing), 0%
    assert metrics["wer_seed_corpus"] == pytest.approx(100 * 4 / 12)
    assert metrics["wer_seed_over50"] == pytest.approx(100 / 3)
    assert metrics["wer_whisper_utt_mean"] == pytest.approx(100 / 3)
    assert metrics["sim"] == pytest.approx(1.0 / 3)  # 0.5, 0 (missing), 0.5
    assert metrics["failed_files"] == 1
    assert ctx.extra_provenance["failed_files"] == ["utt1"]
    assert any("published seed-tts-en list has 1088" in note for note in ctx.notes)
    rows = [json.loads(line) for line in (tmp_path / "per_utterance.jsonl").read_text().splitlines()]
    assert rows[1]["problem"] == "missing" and rows[1]["wer_seed"]["wer"] == 1.0 and rows[1]["sim"] == 0.0
    assert rows[0]["source_rate"] == 22050 and rows[0]["wer_seed"]["hypothesis"] == "target sentence number 0"


def test_sample_folder_validation(tmp_path):
    task = SeedTTSEnglish(TTSConfig(list_path=str(write_seed_set(tmp_path / "set"))))
    gen = tmp_path / "gen"
    gen.mkdir()
    with pytest.raises(InputError, match="no .wav files"):
        task.load_samples(gen)
    sf.write(gen / "utt9.wav", tone(16000), 16000)
    with pytest.raises(InputError, match=r"1 wav files whose names are not utterance ids.*utt9"):
        task.load_samples(gen)
    with pytest.raises(InputError, match="not a folder"):
        task.load_samples(gen / "utt9.wav")
    (gen / "utt9.wav").unlink()
    sf.write(gen / "utt0.wav", tone(16000), 16000)
    (tmp_path / "set" / "prompt-wavs" / "p2.wav").unlink()
    with pytest.raises(InputError, match=r"prompt .*p2.wav of utterance 'utt2' is missing"):
        task.load_samples(gen)


def test_missing_list_names_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    with pytest.raises(InputError, match=r"seed-tts-eval/en/meta.lst.*Google Drive.*--set list_path"):
        SeedTTSEnglish().list_file()


@needs_espeak
def test_offline_smoke_test_end_to_end(results_dir):
    from harness.runner import RunOptions, Runner
    from harness.store import Store

    runner = Runner(Store(), RunOptions(progress=False, batch_size=2, shard_size=4))
    result = runner.run("espeak-tts-mini", "espeak-ng", {"rtf_items": 2, "rtf_warmup": 1})
    metrics = {m.name: m.value for m in result.metrics}
    assert metrics["failed_files"] == 0
    assert metrics["wer_whisper_corpus"] < 30  # Whisper-base on espeak-ng speech: about 10-20%
    assert metrics["sim"] > 0.5  # same espeak voice as the prompts
    assert 0 < metrics["rtf_p50"] <= metrics["rtf_p95"] < 1  # espeak-ng is far faster than real time
    rows = [json.loads(line) for line in (result.run_dir / "per_utterance.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(row["hypothesis"] for row in rows)
    stored = Store().records(task="espeak-tts-mini")[0]
    assert "asr.model:whisper-base-ct2" in stored["signature"]
    assert "sim.model:espeak-speaker-tdnn" in stored["signature"]


def test_score_without_weights_names_them_and_stores_nothing(tmp_path, results_dir, monkeypatch):
    from harness.errors import MissingAssetError
    from harness.features.speaker import speaker_signature
    from harness.runner import RunOptions, Runner
    from harness.store import Store

    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    meta = write_seed_set(tmp_path / "set")
    gen = tmp_path / "gen"
    gen.mkdir()
    sf.write(gen / "utt0.wav", tone(16000), 16000)
    runner = Runner(Store(), RunOptions(progress=False))
    with pytest.raises(MissingAssetError, match=r"(?s)whisper-large-v3.pt is not at .*home/weights.*"
                                                r"wavlm_large_finetune.pth is not at.*utmos22_strong_step7459_v1.pt") as info:
        runner.score("seed-tts-en", gen, {"list_path": str(meta)})
    # one entry per file, and the count in the message is the number of entries
    missing = info.value.missing
    assert len(missing) >= 3 and f"needs {len(missing)} files that are missing" in str(info.value)
    with pytest.raises(MissingAssetError, match=r"wavlm_large_finetune.pth is not at"):
        speaker_signature("wavlm-large-ecapa")
    assert Store().records() == []


def test_signature_hashes_contents_not_paths(tmp_path, monkeypatch):
    import harness.features.asr as asr_module

    monkeypatch.setattr(asr_module, "recognizer_signature", lambda name: {"model": name})
    first, second = write_seed_set(tmp_path / "a"), write_seed_set(tmp_path / "b")

    def signature(meta: Path) -> str:
        return str(SeedTTSEnglish(TTSConfig(list_path=str(meta), speaker_model="espeak-speaker-tdnn",
                                            utmos=False)).signature())

    assert signature(first) == signature(second)
    assert "list_path" not in signature(first) and "prompts_sha256" in signature(first)
    sf.write(tmp_path / "b" / "prompt-wavs" / "p0.wav", tone(16000, freq=999), 16000)
    assert signature(first) != signature(second)


def test_closed_speaker_compares_with_all_held_out_recordings(tmp_path, monkeypatch):
    from tasks.tts import ClosedSpeakerConfig, ClosedSpeakerTTS

    (tmp_path / "list.txt").write_text("a|Hello there.\nb|Good morning.\n", encoding="utf-8")
    with pytest.raises(InputError, match="speaker_reference_dir"):
        ClosedSpeakerTTS(ClosedSpeakerConfig(list_path=str(tmp_path / "list.txt"))).reference_files()
    held_out = tmp_path / "held"
    held_out.mkdir()
    for i in range(3):
        sf.write(held_out / f"r{i}.wav", tone(16000, freq=200 + 100 * i), 16000)
    task = ClosedSpeakerTTS(ClosedSpeakerConfig(list_path=str(tmp_path / "list.txt"),
                                                speaker_reference_dir=str(held_out)))
    refs = task.speaker_reference(task.items())
    assert set(refs) == {"a", "b"} and len(refs["a"]) == 3 and refs["a"] is refs["b"]
    assert task.items()[0].prompt_wav is None


def test_reference_without_words_is_refused_up_front(tmp_path):
    meta = write_seed_set(tmp_path / "set")
    with meta.open("a", encoding="utf-8") as out:
        out.write("utt9|p|prompt-wavs/p0.wav|Mm-hmm.\n")  # Whisper's normaliser deletes fillers
    with pytest.raises(InputError, match=r"no words left after normalisation \(ids utt9\)"):
        SeedTTSEnglish(TTSConfig(list_path=str(meta))).requests()


@needs_espeak
def test_espeak_outputs_do_not_depend_on_batching():
    from baselines.tts.espeak import EspeakNG
    from harness.api import Request

    method = EspeakNG()
    requests = [Request(i, f"u{i}", i, {"text": text}) for i, text in enumerate(["One two.", "Three four five."])]
    together = method.generate(requests)
    alone = [method.generate([r])[0] for r in requests]
    for (a, rate_a), (b, rate_b) in zip(together, alone):
        assert rate_a == rate_b and np.array_equal(a, b)
