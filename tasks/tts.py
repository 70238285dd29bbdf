"""Text-to-speech tasks: intelligibility (WER), speaker similarity (SIM) and real-time factor (RTF).

Tasks
* `seed-tts-en`: Seed-TTS-eval English (`en/meta.lst`, 1,088 lines `utt|prompt_text|prompt_wav|target_text`).
* `librispeech-pc`: F5-TTS's LibriSpeech-PC test-clean cross-sentence list (1,127 tab-separated lines
  `ref_utt ref_dur ref_txt gen_utt gen_dur gen_txt`), prompts read from a LibriSpeech `test-clean` tree.
* `tts-closed-speaker`: single-voice systems: a list `utt|target_text` and a folder of held-out recordings of
  the target speaker; SIM is against the mean embedding of those recordings.
* `espeak-tts-mini`: an offline smoke test (runs in `arbench demo`): five short sentences, prompts spoken by
  espeak-ng, Whisper-base ASR and the project's small speaker network. It is not Seed-TTS-eval.

Scoring is the same for all: every audio file is read as mono (channels averaged) and resampled to 16 kHz
with one resampler (`scipy.signal.resample_poly`, Kaiser window beta 5). A missing, unreadable, empty or
non-finite file is never skipped: it scores WER 100% (every reference word deleted), SIM 0 (and UTMOS 1),
and is listed in the run's log and per-utterance artifact. WER is stored under both normalisers (Seed-compatible and
Whisper's English normaliser) as the per-utterance mean (the published convention), the corpus WER and the
share of utterances above 50%. UTMOS22 strong (naturalness) is stored as its own metric where enabled.
RTF (synthesis seconds / audio seconds, batch 1, after warm-up, p50 and p95) is measured with
`harness.timing` when a method is run, not when audio is only scored.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import soundfile as sf

from harness import provenance
from harness.api import Method, Request, SubmissionSpec, Task
import harness.features.asr  # noqa: F401  (importing a feature module registers its weight specs)
import harness.features.utmos  # noqa: F401
import harness.features.wavlm_ecapa  # noqa: F401
from harness.config import arbench_home
from harness.errors import InputError
from harness.features.audio import RESAMPLER, SAMPLE_RATE, to_16k_mono
from harness.inputs import InputCaps, audio_duration, read_text, regular_file
from harness.metrics.base import MetricValue
from harness.metrics.speech import NORMALIZER_VERSIONS, corpus_wer, normalize, per_utterance_wer
from harness.registry import register_task
from harness.settings import Annotated, Field
from harness.signature import Signature
from harness.weights import require_all

#: Fraction of samples at full scale above which a file is flagged as clipped (it is still scored).
CLIPPED_FRACTION = 0.001
WER_NORMALIZERS = ("seed", "whisper")
WER_OVER = 0.5
#: Settings that are local paths: left out of the signature, which hashes what they point to.
PATH_SETTINGS = ("list_path", "test_clean", "speaker_reference_dir")
#: UTMOS given to a missing or unreadable file: the bottom of the 1-5 MOS scale.
UTMOS_FLOOR = 1.0
#: Version of the streaming metrics (first_packet_p50/p95, chunk_rtf_p50/p95; `TTSTask.streaming_latency`).
STREAMING_METRICS_VERSION = "1"


# -- audio ----------------------------------------------------------------------------------------
@dataclass
class Audio:
    """A file read for scoring: 16 kHz mono float32 `samples`, or `problem` saying why it cannot be scored."""

    samples: np.ndarray | None
    problem: str | None = None
    flags: list[str] = field(default_factory=list)
    source_rate: int | None = None
    duration_s: float = 0.0


def read_audio(path: Path | None, caps: InputCaps = InputCaps()) -> Audio:
    """Read and check one file; never raises for a bad file (the problem is recorded instead). Only regular
    files are opened, and the duration is checked from the header before any sample is read."""
    if path is None or not path.exists():
        return Audio(None, "missing")
    try:
        audio_duration(path, caps, unreadable_ok=True)
    except InputError as exc:
        return Audio(None, f"refused: {exc}")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt or unknown containers
        return Audio(None, f"unreadable ({type(exc).__name__}: {str(exc)[:120]})")
    flags = [f"{samples.shape[1]} channels averaged"] if samples.shape[1] > 1 else []
    if samples.shape[0] == 0:
        return Audio(None, "empty (0 samples)", flags, rate)
    if not np.isfinite(samples).all():
        return Audio(None, "contains NaN or infinite samples", flags, rate)
    if float(np.abs(samples).max()) == 0.0:
        return Audio(None, "silent (all samples are zero)", flags, rate)
    if np.mean(np.abs(samples) >= 0.999) > CLIPPED_FRACTION:
        flags.append("clipped")
    audio = to_16k_mono(samples, rate)
    return Audio(audio, None, flags, rate, len(audio) / SAMPLE_RATE)


# -- test lists -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TTSItem:
    """One utterance to synthesise: its id, the text, and (voice cloning) the prompt recording and its text."""

    id: str
    text: str
    prompt_wav: Path | None = None
    prompt_text: str = ""


def read_text_lines(path: Path, caps: InputCaps = InputCaps()) -> list[str]:
    """Non-empty lines of a UTF-8 list file (a regular file under the text cap); other encodings are refused
    with the line that fails."""
    text = read_text(path, "list", caps)
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def check_ids(items: Sequence[TTSItem], path: Path) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"{path}: utterance id {item.id!r} appears twice; ids must be unique.")
        if not item.text.strip():
            raise InputError(f"{path}: utterance {item.id!r} has an empty target text.")
        seen.add(item.id)


def check_references(items: Sequence[TTSItem]) -> None:
    """Every target text must keep at least one word under both normalisers (else its WER is undefined)."""
    empty = [item.id for item in items for n in WER_NORMALIZERS if not normalize(item.text, n).split()]
    if empty:
        raise InputError(f"{len(empty)} target texts have no words left after normalisation (ids "
                         f"{', '.join(dict.fromkeys(empty[:5]))}); remove them from the list.")


def parse_seed_list(path: Path) -> list[TTSItem]:
    """Seed-TTS-eval `meta.lst`: `utt|prompt_text|prompt_wav|target_text[|gt_wav]`, prompt paths relative to it."""
    items = []
    for n, line in enumerate(read_text_lines(path), 1):
        parts = line.split("|")
        if len(parts) not in (4, 5):
            raise InputError(f"{path}:{n}: expected 4 or 5 '|'-separated fields "
                             f"(utt|prompt_text|prompt_wav|target_text), got {len(parts)}: {line[:80]!r}")
        utt, prompt_text, prompt_wav, target = parts[:4]
        items.append(TTSItem(utt.strip(), target.strip(), path.parent / prompt_wav.strip(), prompt_text.strip()))
    check_ids(items, path)
    return items


def parse_librispeech_pc_list(path: Path, test_clean: Path) -> list[TTSItem]:
    """F5-TTS's `librispeech_pc_test_clean_cross_sentence.lst` (6 tab-separated fields), prompts from test-clean."""
    items = []
    for n, line in enumerate(read_text_lines(path), 1):
        parts = line.split("\t")
        if len(parts) != 6:
            raise InputError(f"{path}:{n}: expected 6 tab-separated fields "
                             f"(ref_utt ref_dur ref_txt gen_utt gen_dur gen_txt), got {len(parts)}")
        ref_utt, _, ref_txt, gen_utt, _, gen_txt = parts
        speaker, chapter, _ = ref_utt.split("-", 2)
        items.append(TTSItem(gen_utt, gen_txt, test_clean / speaker / chapter / f"{ref_utt}.flac", ref_txt))
    check_ids(items, path)
    return items


def parse_closed_list(path: Path) -> list[TTSItem]:
    """`utt|target_text` lines (no prompt)."""
    items = []
    for n, line in enumerate(read_text_lines(path), 1):
        utt, sep, text = line.partition("|")
        if not sep:
            raise InputError(f"{path}:{n}: expected `utt|target_text`, got {line[:80]!r}")
        items.append(TTSItem(utt.strip(), text.strip()))
    check_ids(items, path)
    return items


def file_sha256(path: Path) -> str:
    regular_file(path, "list or reference audio")  # never hash a FIFO or a device (it would not end)
    return provenance.sha256_file(path)


# -- the tasks ------------------------------------------------------------------------------------
@dataclass
class TTSConfig:
    """Scoring choices shared by the TTS tasks (every one is in the signature).

    `asr`: "whisper-large-v3" or "whisper-base-ct2"; `speaker_model`: a name in
    `harness.features.speaker.SPEAKER_ENCODERS`; `utmos`: score naturalness with UTMOS22 strong;
    `rtf_items`: utterances timed at batch 1 after `rtf_warmup` discarded calls when a method is run
    (0: no RTF).
    """

    list_path: str = ""
    asr: str = "whisper-large-v3"
    speaker_model: str = "wavlm-large-ecapa"
    utmos: bool = True
    rtf_items: Annotated[int, Field(ge=0, le=10_000, description="0: no RTF")] = 20
    rtf_warmup: Annotated[int, Field(ge=0, le=1000)] = 3


class TTSTask(Task):
    """Shared protocol: requests from a list, one wav per utterance id, WER + SIM (+ RTF when generating)."""

    modality = "tts"
    submission = SubmissionSpec("tts", "generate(requests) -> list[(float waveform, sample_rate)] (condition: "
                                "text, prompt_wav, prompt_text)")
    primary_metric = "wer_seed_utt_mean"
    version = "1"
    Config = TTSConfig
    #: a method opens each request's voice prompt; a submission's child gets a copy of it, not the test set's folder
    #: (its target recordings)
    input_keys = ("prompt_wav",)
    #: Seed-TTS-eval and LibriSpeech-PC utterances last seconds; a file over two minutes is not a TTS sample.
    caps = InputCaps(audio_seconds=120.0)
    default_list: ClassVar[str] = ""
    #: Length of the published list (0: no published list).
    official_items: ClassVar[int] = 0

    # subclasses: the list of items
    def items(self) -> list[TTSItem]:
        raise NotImplementedError

    def list_file(self) -> Path:
        path = Path(self.config.list_path or arbench_home() / "data" / self.default_list).expanduser()
        if not path.is_file():
            raise InputError(f"task {self.name!r} needs its test list at {path}. {self.list_hint()} "
                             f"or pass --set list_path=/path/to/the/list.")
        return path

    def list_hint(self) -> str:
        return ""

    def speaker_reference(self, items: Sequence[TTSItem]) -> dict[str, np.ndarray | None]:
        """16 kHz audio each generated utterance is compared with (its prompt); bad prompts are refused."""
        refs: dict[str, np.ndarray | None] = {}
        for item in items:
            audio = read_audio(item.prompt_wav, self.caps)
            if audio.problem:
                raise InputError(f"prompt {item.prompt_wav} of utterance {item.id!r} is {audio.problem}: "
                                 f"the test set is incomplete; restore it before scoring.")
            refs[item.id] = audio.samples
        return refs

    def _items(self) -> list[TTSItem]:
        if not hasattr(self, "_cached_items"):
            items = self.items()
            check_references(items)
            self._cached_items = items
        return self._cached_items

    # -- models --
    def recognizer(self, device: str = "cpu"):
        from harness.features.asr import load_recognizer

        return load_recognizer(self.config.asr, device)

    def speaker_encoder(self, device: str = "cpu"):
        from harness.features.speaker import load_speaker_encoder

        return load_speaker_encoder(self.config.speaker_model, device)

    def signature(self) -> Signature:
        """Settings, minus local paths (their contents are hashed instead), plus every model and library choice."""
        from importlib.metadata import version

        from harness.features.asr import recognizer_signature
        from harness.features.speaker import speaker_signature

        sig = Signature().add("task", self.name).add("task_version", self.version)
        sig.update("task", {k: v for k, v in self.settings().items() if k not in PATH_SETTINGS})
        sig.add("list_sha256", file_sha256(self.list_file())).add("items", len(self._items()))
        prompts = sorted({item.prompt_wav for item in self._items() if item.prompt_wav and item.prompt_wav.is_file()})
        if prompts:
            sig.add("prompts_sha256", hashlib.sha256("".join(file_sha256(p) for p in prompts).encode()).hexdigest())
        sig.add("resampler", RESAMPLER).add("sample_rate", SAMPLE_RATE)
        # every missing weights file is named at once (with the count), not one per attempt
        asr, sim, utmos = require_all([lambda: recognizer_signature(self.config.asr),
                                       lambda: speaker_signature(self.config.speaker_model),
                                       utmos_signature if self.config.utmos else dict], f"task {self.name}")
        sig.update("asr", asr)
        sig.add("jiwer", version("jiwer")).add("wer_normalizers", NORMALIZER_VERSIONS)
        sig.update("sim", sim)
        if self.config.utmos:
            sig.update("utmos", utmos)
        return sig

    # -- generation --
    def requests(self) -> list[Request]:
        return [Request(i, item.id, i, {"text": item.text, "prompt_wav": str(item.prompt_wav or ""),
                                        "prompt_text": item.prompt_text})
                for i, item in enumerate(self._items())]

    def write_shard(self, outputs: Sequence[tuple[np.ndarray, int]], requests: Sequence[Request],
                    directory: Path) -> None:
        for (audio, rate), request in zip(outputs, requests):
            sf.write(str(directory / f"{request.id}.wav"), np.asarray(audio, dtype=np.float32), int(rate),
                     subtype="FLOAT")

    def read_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request]) -> dict[str, Path | None]:
        found = {p.stem: p for d in shard_dirs for p in d.glob("*.wav")}
        return {r.id: found.get(r.id) for r in requests}

    def run(self, method: Method, ctx) -> list[MetricValue]:
        metrics = super().run(method, ctx)
        if ctx.is_main and self.config.rtf_items > 0:
            metrics += self.real_time_factor(method, ctx)
            if type(method).streaming:  # declared on the class, never inferred
                metrics += self.streaming_latency(method, ctx)
        return metrics

    def streaming_latency(self, method: Method, ctx, clock=None) -> list[MetricValue]:
        """For methods that declare `streaming`: first-packet latency (call -> first audio chunk ready, seconds)
        and per-chunk RTF (a chunk's compute seconds / its audio seconds), p50 and p95, measured like RTF (batch
        1, the same utterances, after the same warm-up) with `harness.timing.stream_timing`."""
        import time

        from harness.timing import stream_timing, streaming_summary

        requests = self.requests()[:self.config.rtf_items]
        measured = stream_timing(method.stream, requests, lambda chunk: len(chunk[0]) / chunk[1],
                                 warmup=self.config.rtf_warmup, device=ctx.device, clock=clock or time.perf_counter)
        summary = streaming_summary(measured)
        note = (f"batch 1, {len(requests)} utterances, {int(summary['chunks'])} chunks, "
                f"{self.config.rtf_warmup} warm-up streams, on {ctx.extra_provenance.get('rtf_hardware', ctx.device)}")
        version = STREAMING_METRICS_VERSION
        return [MetricValue("first_packet_p50", summary["first_packet_p50"], False, "s", version, description=note),
                MetricValue("first_packet_p95", summary["first_packet_p95"], False, "s", version, description=note),
                MetricValue("chunk_rtf_p50", summary["chunk_rtf_p50"], False, "x", version, description=note),
                MetricValue("chunk_rtf_p95", summary["chunk_rtf_p95"], False, "x", version, description=note)]

    def real_time_factor(self, method: Method, ctx) -> list[MetricValue]:
        """Synthesis seconds / seconds of audio produced, one request per call, after warm-up (p50, p95)."""
        from harness.timing import TimingConfig, compare

        requests = self.requests()[:self.config.rtf_items]
        result = compare({"tts": lambda r: method.generate([r])[0]}, requests,
                         TimingConfig(warmup=self.config.rtf_warmup, rounds=1), device=ctx.device)
        seconds = result.times["tts"][0]
        durations = np.array([len(audio) / rate for audio, rate in result.outputs["tts"]])
        rtf = seconds / np.maximum(durations, 1e-9)
        p50, p95 = np.percentile(rtf, [50, 95])
        ctx.extra_provenance["rtf_hardware"] = result.hardware
        note = f"batch 1, {len(requests)} utterances, {self.config.rtf_warmup} warm-up calls, on {result.hardware}"
        return [MetricValue("rtf_p50", float(p50), False, "x", "1", description=note),
                MetricValue("rtf_p95", float(p95), False, "x", "1", description=note)]

    # -- scoring --
    def load_samples(self, path: Path) -> dict[str, Path | None]:
        """A folder of `<utt>.wav` files; ids not in the list are refused, absent ones are scored as missing."""
        if not path.is_dir():
            raise InputError(f"{path} is not a folder: give a folder of wav files named `<utterance id>.wav`.")
        items = self._items()
        wanted = {item.id for item in items}
        files = {p.stem: p for p in path.iterdir() if p.suffix.lower() == ".wav"}
        unknown = sorted(set(files) - wanted)
        if unknown:
            raise InputError(f"{path} has {len(unknown)} wav files whose names are not utterance ids of "
                             f"{self.list_file()}: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}. "
                             f"Name each file after its utterance id, or remove the extra files.")
        if not files:
            raise InputError(f"{path} has no .wav files; expected files named like {items[0].id}.wav.")
        for file in files.values():  # regular files under the duration cap; unreadable ones score as failures
            audio_duration(file, self.caps, f"task {self.name!r}", "wav", unreadable_ok=True)
        self.speaker_reference(items)  # refuses a broken test set before anything is stored
        return {item.id: files.get(item.id) for item in items}

    def score(self, samples: dict[str, Path | None], ctx) -> list[MetricValue]:
        items = self._items()
        if self.official_items and len(items) != self.official_items:
            ctx.log(f"the list has {len(items)} items; the published {self.name} list has {self.official_items}: "
                    f"numbers are not comparable with published ones")
        asr = self.recognizer(ctx.device)
        encoder = self.speaker_encoder(ctx.device)
        references = self.speaker_reference(items)
        mos = None
        if self.config.utmos:
            from harness.features.utmos import UTMOSPredictor

            mos = UTMOSPredictor(ctx.device)
        rows: list[dict[str, Any]] = []
        hypotheses, similarities, naturalness = [], [], []
        for item in ctx.progress(items, total=len(items), desc="score"):
            audio = read_audio(samples.get(item.id), self.caps)
            row: dict[str, Any] = {"id": item.id, "reference": item.text, "problem": audio.problem,
                                   "flags": audio.flags, "source_rate": audio.source_rate,
                                   "duration_s": round(audio.duration_s, 3)}
            if audio.problem:
                hypothesis, sim, utmos = "", 0.0, UTMOS_FLOOR
                ctx.log(f"{item.id}: {audio.problem}; scored as WER 100%, SIM 0" + (", UTMOS 1" if mos else ""))
            else:
                hypothesis = asr.transcribe(audio.samples)
                sim = encoder.similarity(audio.samples, references[item.id])
                utmos = mos.score(audio.samples) if mos else None
            row.update(hypothesis=hypothesis, sim=sim, utmos=utmos)
            hypotheses.append(hypothesis)
            similarities.append(sim)
            naturalness.append(utmos)
            rows.append(row)
        metrics: list[MetricValue] = []
        texts = [item.text for item in items]
        for normalizer in WER_NORMALIZERS:
            utt = per_utterance_wer(hypotheses, texts, normalizer=normalizer)
            for row, u in zip(rows, utt):
                row[f"wer_{normalizer}"] = u.as_row()
            metrics += wer_metrics(utt, normalizer)
        failed = [row["id"] for row in rows if row["problem"]]
        metrics.append(MetricValue("sim", float(np.mean(similarities)), True, "cos", "1",
                                   description=f"mean cosine similarity ({self.config.speaker_model}) "
                                               f"to the reference voice; failed files count 0"))
        if mos:
            metrics.append(MetricValue("utmos", float(np.mean(naturalness)), True, "MOS", "1",
                                       description="UTMOS22 strong, one utterance per call, mean over utterances; "
                                                   "failed files count 1 (the scale minimum)"))
        metrics.append(MetricValue("failed_files", float(len(failed)), False, "files", "1",
                                   description="missing, unreadable, empty or non-finite files (scored as failures)"))
        with ctx.artifact("per_utterance.jsonl").open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        ctx.extra_provenance["failed_files"] = failed
        return metrics


def utmos_signature() -> dict[str, Any]:
    from harness.features.utmos import UTMOS22_STRONG

    return {"model": UTMOS22_STRONG.name, "sha256": UTMOS22_STRONG.verify(UTMOS22_STRONG.resolve(verify=False))}


def wer_metrics(rows, normalizer: str) -> list[MetricValue]:
    """Per-utterance mean WER, corpus WER and share of utterances above 50%, in percent."""
    how = f"{normalizer!r} normaliser; failed files count as 100%"
    return [
        MetricValue(f"wer_{normalizer}_utt_mean", 100 * float(np.mean([r.wer for r in rows])), False, "%", "1",
                    description=f"mean of per-utterance WER, {how}"),
        MetricValue(f"wer_{normalizer}_corpus", 100 * corpus_wer(rows), False, "%", "1",
                    description=f"corpus WER = sum(S+D+I) / reference words, {how}"),
        MetricValue(f"wer_{normalizer}_over50", 100 * float(np.mean([r.wer > WER_OVER for r in rows])), False, "%",
                    "1", description=f"share of utterances with WER above 50%, {how}"),
    ]


@register_task("seed-tts-en")
class SeedTTSEnglish(TTSTask):
    description = "Seed-TTS-eval English (1,088 Common Voice items): WER (Whisper large-v3), SIM (WavLM-L ECAPA)"
    default_list = "seed-tts-eval/en/meta.lst"
    official_items = 1088

    def list_hint(self) -> str:
        return ("Download seedtts_testset from the Google Drive link in the BytedanceSpeech/seed-tts-eval README "
                f"and unpack it so that en/meta.lst and en/prompt-wavs/ are under "
                f"{arbench_home() / 'data' / 'seed-tts-eval'},")

    def items(self) -> list[TTSItem]:
        return parse_seed_list(self.list_file())


@dataclass
class LibriSpeechPCConfig(TTSConfig):
    """`test_clean`: the LibriSpeech `test-clean` folder (`<speaker>/<chapter>/<utt>.flac`)."""

    test_clean: str = ""


@register_task("librispeech-pc")
class LibriSpeechPC(TTSTask):
    description = "LibriSpeech-PC test-clean cross-sentence (F5-TTS list, 1,127 pairs): WER, SIM"
    default_list = "librispeech-pc/librispeech_pc_test_clean_cross_sentence.lst"
    official_items = 1127
    Config = LibriSpeechPCConfig

    def list_hint(self) -> str:
        return "Take data/librispeech_pc_test_clean_cross_sentence.lst from the SWivid/F5-TTS repository"

    def items(self) -> list[TTSItem]:
        root = Path(self.config.test_clean or arbench_home() / "data" / "LibriSpeech" / "test-clean").expanduser()
        if not root.is_dir():
            raise InputError(f"LibriSpeech test-clean is not at {root}: download test-clean.tar.gz from "
                             f"https://www.openslr.org/12 and pass --set test_clean=/path/to/LibriSpeech/test-clean.")
        return parse_librispeech_pc_list(self.list_file(), root)


@dataclass
class ClosedSpeakerConfig(TTSConfig):
    """`speaker_reference_dir`: held-out recordings (wav/flac) of the system's one voice."""

    speaker_reference_dir: str = ""


@register_task("tts-closed-speaker")
class ClosedSpeakerTTS(TTSTask):
    description = "single-voice TTS: WER, and SIM against held-out recordings of the target speaker"
    default_list = "tts-closed-speaker/list.txt"
    Config = ClosedSpeakerConfig

    def list_hint(self) -> str:
        return "Write a list of `utt|target_text` lines"

    def items(self) -> list[TTSItem]:
        return parse_closed_list(self.list_file())

    def reference_files(self) -> list[Path]:
        folder = Path(self.config.speaker_reference_dir).expanduser()
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".wav", ".flac")) if folder.is_dir() else []
        if not self.config.speaker_reference_dir or not files:
            raise InputError("tts-closed-speaker needs held-out recordings of the target speaker: "
                             "--set speaker_reference_dir=/folder/with/wavs (not the training data).")
        return files

    def signature(self) -> Signature:
        digest = hashlib.sha256("".join(file_sha256(p) for p in self.reference_files()).encode()).hexdigest()
        return super().signature().add("speaker_reference_sha256", digest)

    def speaker_reference(self, items: Sequence[TTSItem]) -> dict[str, np.ndarray | None]:
        """Every item is compared with all held-out recordings (the encoder averages their embeddings)."""
        clips = []
        for path in self.reference_files():
            audio = read_audio(path, self.caps)
            if audio.problem:
                raise InputError(f"speaker reference {path} is {audio.problem}; remove or replace it.")
            clips.append(audio.samples)
        return {item.id: clips for item in items}


# -- the offline smoke test ---------------------------------------------------------------------------
MINI_SENTENCES = (
    ("mini-001", "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background."),
    ("mini-002", "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish."),
    ("mini-003", "Rice is often served in round bowls.", "The juice of lemons makes fine punch."),
    ("mini-004", "The box was thrown beside the parked truck.", "Four hours of steady work faced us."),
    ("mini-005", "A large size in stockings is hard to sell.", "The boy was there when the sun rose."),
)


@dataclass
class EspeakMiniConfig(TTSConfig):
    """Offline defaults: Whisper-base (CTranslate2) and the project's espeak-trained speaker network."""

    asr: str = "whisper-base-ct2"
    speaker_model: str = "espeak-speaker-tdnn"
    utmos: bool = False  # no UTMOS weights ship offline
    prompt_voice: str = "en-us"
    rtf_items: int = 5
    rtf_warmup: int = 2

    def __post_init__(self):
        if self.list_path:
            raise InputError("espeak-tts-mini's list is built in (5 Harvard sentences), so list_path does not apply "
                             "to it; score your own list with seed-tts-en or tts-closed-speaker --set list_path=...")


@register_task("espeak-tts-mini")
class EspeakTTSMini(TTSTask):
    description = ("offline TTS smoke test (5 Harvard sentences, espeak-ng prompts, Whisper-base, project speaker "
                   "net); not Seed-TTS-eval")
    Config = EspeakMiniConfig
    offline = True
    demo_methods = ("espeak-ng", "melle-mini")

    def list_file(self) -> Path:
        """The list is written from the sentences above, prompts synthesised by espeak-ng on first use."""
        from harness.datasets.espeak import EspeakConfig, espeak_version, synthesize

        voice = self.config.prompt_voice
        tag = hashlib.sha256(f"{espeak_version()}|{voice}|{MINI_SENTENCES}".encode()).hexdigest()[:12]
        folder = arbench_home() / "data" / f"espeak-tts-mini-{tag}"
        path = folder / "meta.lst"
        if not path.is_file():
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "prompt-wavs").mkdir(parents=True)
            lines = []
            for utt, target, prompt in MINI_SENTENCES:
                audio, rate = synthesize(prompt, EspeakConfig(voice=voice))
                sf.write(str(tmp / "prompt-wavs" / f"{utt}.wav"), audio, rate)
                lines.append(f"{utt}|{prompt}|prompt-wavs/{utt}.wav|{target}")
            (tmp / "meta.lst").write_text("\n".join(lines) + "\n", encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        return path

    def items(self) -> list[TTSItem]:
        return parse_seed_list(self.list_file())
