"""The registered closed-speaker TTS method `talknet2-ljs`: NeMo's TalkNet 2 (LJSpeech) + NeMo's HiFi-GAN.

Weights: NGC `nvidia/nemo/tts_en_talknet` version 1.0.0rc1, three `.nemo` files (durations, pitch, mel), each a
tar archive of `model_config.yaml` and `model_weights.ckpt`. `read_nemo` takes exactly those two members into
memory (nothing is extracted to disk, so no member path can escape), parses the yaml with `yaml.safe_load` and the
state dict with `torch.load(weights_only=True)`; the networks are built from the file's own config (vocabulary
flags, encoder layout, `f0_mean`/`f0_std`, `n_mels`), not from defaults.

Text frontend: NeMo's `Phonemes` vocabulary (`TalkNetPhonemes`, re-implemented: label table and `encode` rules)
over `g2p_en.G2p()`, which is what NeMo's vocabulary calls (`improved_version_g2p: false`). g2p_en is a PyPI
package (Apache-2.0) that needs NLTK's `averaged_perceptron_tagger` and `cmudict` data; it is imported only when
the method loads and its absence is reported with the install commands. Then the blank-interleaved ids go through
`generate_mel` (upstream's `generate_spectrogram`: durations exp - 1 rounded, F0 zeroed where silent) and the
vocoder, one request at a time.

Vocoder (`vocoder`, in the signature): `hifigan` (default) is NeMo's own HiFi-GAN (NGC `nvidia/nemo/tts_hifigan`
1.0.0rc1, `tts_hifigan.nemo`, trained on LJSpeech with mels from NeMo's featuriser and from Tacotron 2, TalkNet
and FastPitch), the pairing NeMo itself uses: TalkNet's mels come from NeMo's `FilterbankFeatures` (symmetric
Hann window), not from Tacotron 2's STFT (periodic Hann) that WaveGlow was trained on. Its file is read by the
same `read_nemo` and only its `generator.` tensors are used (baselines/tts/hifigan.py). `waveglow` keeps the
project's WaveGlow (sigma `waveglow_sigma`). TalkNet and HiFi-GAN draw nothing at random; WaveGlow's noise comes
from a `torch.Generator` seeded with the request's seed, so a waveform never depends on its batch.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np
import torch

from baselines.imagegen.checkpoints import combined_sha256, load_into
from baselines.tts.flowtron_methods import WAVEGLOW, read_waveglow_state
from baselines.tts.hifigan import HiFiGANConfig, HiFiGANGenerator, generator_state
from baselines.tts.talknet import (EncoderLayer, TalkNetDurs, TalkNetPitch, TalkNetSpect, generate_mel,
                                   interleave_blanks)
from baselines.tts.waveglow import WaveGlow, WaveGlowConfig
from harness.api import Method, Request
from harness.errors import ArbenchError, InputError
from harness.registry import register_method
from harness.settings import Literal, NonNegativeFloat
from harness.weights import WeightSpec, register_weights, require_all

UPSTREAM = "NVIDIA/NeMo@77be76349901d0dd99ad6778509ef5c0663a65c3"
SAMPLE_RATE = 22050
NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/nemo/tts_en_talknet/versions/1.0.0rc1/files/"
TALKNET_LICENSE = ("the NGC model card's licence for nvidia/nemo/tts_en_talknet (not readable offline; check it "
                   "before use); NeMo's code is Apache-2.0")
# NGC publishes no checksums; sha256=None makes the digest of the file used go into the signature.
PARTS = ("durs", "pitch", "spect")
#: The three files by part (registered as talknet-durs, talknet-pitch, talknet-spect).
TALKNET_WEIGHTS = {part: register_weights(WeightSpec(
    f"talknet-{part}", f"talknet_{part}.nemo", f"{NGC}talknet_{part}.nemo", None, TALKNET_LICENSE,
    f"TalkNet 2 {what}, LJSpeech (NGC tts_en_talknet 1.0.0rc1)")) for part, what in zip(PARTS, (
        "duration predictor", "pitch predictor", "mel generator (80 mels, 22.05 kHz)"))}
HIFIGAN = register_weights(WeightSpec(
    "nemo-tts-hifigan", "tts_hifigan.nemo",
    "https://api.ngc.nvidia.com/v2/models/nvidia/nemo/tts_hifigan/versions/1.0.0rc1/files/tts_hifigan.nemo", None,
    "the NGC model card's licence for nvidia/nemo/tts_hifigan (not readable offline; check it before use); NeMo's "
    "code is Apache-2.0, its HiFi-GAN modules MIT (jik876/hifi-gan)",
    "NeMo HiFi-GAN vocoder (v1 generator), LJSpeech, 80 mels, 22.05 kHz (NGC tts_hifigan 1.0.0rc1; "
    "HifiGanModel.list_available_models at NeMo v1.8.2)"))

NEMO_MEMBERS = ("model_config.yaml", "model_weights.ckpt")
#: Tensors a `.nemo` state dict may hold that inference does not use: the mel model's training-time featuriser.
UNUSED_PREFIXES = ("preprocessor.",)


# -- reading a .nemo file ---------------------------------------------------------------------------------------
def read_nemo(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of a `.nemo` archive: only its `model_config.yaml` and `model_weights.ckpt` (top
    level, optionally under `./`), read into memory as regular files; the yaml with `safe_load`, the
    weights with `weights_only=True`."""
    import yaml

    path = Path(path)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name in NEMO_MEMBERS:
                    if not member.isreg():
                        raise ArbenchError(f"{path}: {member.name} is not a regular file; not a NeMo checkpoint.")
                    found[name] = tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise ArbenchError(f"{path} is not a .nemo archive (a tar file): {exc}. Give the file downloaded from "
                           "NGC as it is.") from exc
    missing = [m for m in NEMO_MEMBERS if m not in found]
    if missing:
        raise ArbenchError(f"{path} has no {' or '.join(missing)} at its top level; not a NeMo checkpoint.")
    config = yaml.safe_load(found["model_config.yaml"].decode("utf-8"))
    try:
        state = torch.load(io.BytesIO(found["model_weights.ckpt"]), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refuses anything but tensors and containers
        raise ArbenchError(f"{path}: model_weights.ckpt could not be read as a plain state dict with "
                           f"weights_only=True ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).") from exc
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ArbenchError(f"{path}: model_config.yaml is not a mapping or model_weights.ckpt not a state dict.")
    return resolve_references(config), state


_REFERENCE = re.compile(r"^\$\{(?:model\.)?([A-Za-z_][A-Za-z0-9_]*)\}$")


def resolve_references(config: dict[str, Any]) -> dict[str, Any]:
    """NeMo's saved configs may keep OmegaConf references to the model's own top-level keys (`${model.dropout}`,
    `${sample_rate}`); those are replaced by the values. Written here for that one form rather than depending
    on omegaconf; any other `${...}` is left as text and refused where it is used."""

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and (m := _REFERENCE.match(value)) and m.group(1) in config:
            return config[m.group(1)]
        return value

    return walk(config)


def old_layout(config: dict[str, Any]) -> bool:
    """Files saved by NeMo before PR #3092 (January 2022) call the encoder `model` (config node and state-dict
    prefix `model.`); later code, and this one, call it `encoder`."""
    return "encoder" not in config and isinstance(config.get("model"), dict) and "jasper" in config["model"]


def encoder_state(config: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict under this code's names: the pre-#3092 `model.` prefix renamed `encoder.`, the mel model's
    training-time featuriser (`preprocessor.`) dropped."""
    renamed = {("encoder." + k[len("model."):] if old_layout(config) and k.startswith("model.") else k): v
               for k, v in state.items()}
    return {k: v for k, v in renamed.items() if not k.startswith(UNUSED_PREFIXES)}


def encoder_layers(config: dict[str, Any], what: str) -> list[EncoderLayer]:
    try:
        node = config["model"] if old_layout(config) else config["encoder"]
        return [EncoderLayer.from_config(layer) for layer in node["jasper"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArbenchError(f"{what}: its encoder config is not a TalkNet encoder this code supports: {exc}") from exc


# -- NeMo's Phonemes vocabulary ---------------------------------------------------------------------------------
class TalkNetPhonemes:
    """NeMo's `vocabs.Phonemes` (nemo/collections/common/data/vocabs.py at v1.8.2): the label table and `encode`
    applied to a G2P's output (ARPAbet with stress digits, spaces, punctuation)."""

    VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
    CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
                  "TH", "V", "W", "Y", "Z", "ZH")
    PUNCT = (",", ".", "!", "?", "-", ":", ";", "/", '"', "(", ")", "[", "]", "{", "}")
    SUPPORTED = {"notation", "punct", "spaces", "stresses", "chars", "add_blank_at", "pad_with_space",
                 "improved_version_g2p", "phoneme_dict_path"}

    def __init__(self, punct: bool = True, stresses: bool = False, spaces: bool = True, chars: bool = False,
                 add_blank_at: str | None = "last_but_one", pad_with_space: bool = False):
        labels = [" "]
        labels += self.CONSONANTS
        labels += [f"{p}{s}" for p, s in itertools.product(self.VOWELS, (0, 1, 2))] if stresses else self.VOWELS
        if chars:
            labels += "abcdefghijklmnopqrstuvwxyz"
        labels.append("'")
        if punct:
            labels += self.PUNCT
        self.pad, labels = len(labels), labels + ["<pad>"]
        self.blank, labels = len(labels), labels + ["<blank>"]
        self.oov, labels = len(labels), labels + ["<oov>"]
        if add_blank_at == "last":
            labels[-1], labels[-2] = labels[-2], labels[-1]
            self.oov, self.blank = self.blank, self.oov
        self.labels = labels
        self.punct, self.stresses, self.spaces, self.pad_with_space = punct, stresses, spaces, pad_with_space

    @classmethod
    def from_config(cls, vocab: dict[str, Any], what: str) -> "TalkNetPhonemes":
        unsupported = sorted(set(vocab) - cls.SUPPORTED)
        if vocab.get("notation", "chars") != "phonemes" or vocab.get("improved_version_g2p") or unsupported:
            raise ArbenchError(f"{what}: vocabulary {vocab} is not one this frontend reproduces (NeMo's Phonemes "
                               "over g2p_en, without improved_version_g2p).")
        return cls(bool(vocab.get("punct", True)), bool(vocab.get("stresses", False)),
                   bool(vocab.get("spaces", False)), bool(vocab.get("chars", False)),
                   vocab.get("add_blank_at", "last_but_one"), bool(vocab.get("pad_with_space", False)))

    def encode(self, phonemes: Iterable[str]) -> list[int]:
        """Upstream's `encode` after its `self.g2p(text)`; [] when nothing speakable is left."""
        ps: list[str] = []
        space, labels = " ", set(self.labels)
        for p in phonemes:
            if p.isalnum() and len(p) == 3 and not self.stresses:
                p = p[:2]
            if p == space and len(ps) > 0 and ps[-1] != space:
                ps.append(p)
            if (p.isalnum() or p == "'") and p in labels:
                ps.append(p)
            if p in self.PUNCT and self.punct:
                if not self.spaces and len(ps) > 0 and ps[-1] == space:
                    ps.pop()
                ps.append(p)
        while ps and ps[-1] == space:
            ps.pop()
        if not ps:
            return []
        if self.pad_with_space:
            ps = [space] + ps + [space]
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[p] for p in ps]


def g2p_version() -> str:
    """The frontend's package and version, for the signature (phonemes depend on g2p_en's release)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"g2p_en {version('g2p_en')}"
    except PackageNotFoundError:
        return "g2p_en (not installed)"


def load_g2p() -> Callable[[str], list[str]]:
    """`g2p_en.G2p()`, as NeMo's vocabulary builds it, or a message saying what to install."""
    try:
        import g2p_en  # noqa: PLC0415 - optional: only this method's frontend needs it
    except ImportError as exc:
        raise ArbenchError("talknet2-ljs's text frontend is g2p_en, as in NeMo's Phonemes vocabulary: "
                           "`.venv/bin/pip install g2p_en` and `.venv/bin/python -m nltk.downloader "
                           "averaged_perceptron_tagger averaged_perceptron_tagger_eng cmudict` where the network "
                           "allows (or copy those NLTK data folders into ~/nltk_data).") from exc
    try:
        g2p = g2p_en.G2p()
    except LookupError as exc:
        raise ArbenchError(f"g2p_en could not find its NLTK data ({str(exc).strip().splitlines()[0][:200]}); run "
                           "`.venv/bin/python -m nltk.downloader averaged_perceptron_tagger "
                           "averaged_perceptron_tagger_eng cmudict` where the network allows.") from exc
    g2p.variables = None  # as NeMo does
    return g2p


# -- the method -------------------------------------------------------------------------------------------------
@dataclass
class TalkNetSettings:
    """The vocoder (NeMo's HiFi-GAN, or WaveGlow with its sigma: NVIDIA/waveglow's README runs inference at
    0.6) and the weight paths (not in the signature). TalkNet itself has no sampling settings."""

    vocoder: Literal["hifigan", "waveglow"] = "hifigan"
    waveglow_sigma: NonNegativeFloat = 0.6
    peak_normalize: bool = False
    durs_weights: str = ""
    pitch_weights: str = ""
    spect_weights: str = ""
    hifigan_weights: str = ""
    waveglow_weights: str = ""


@dataclass
class TalkNetModels:
    durs: TalkNetDurs
    pitch: TalkNetPitch
    spect: TalkNetSpect
    vocab: TalkNetPhonemes
    blanking: bool
    vocoder: HiFiGANGenerator | WaveGlow


def build_talknet(part: str, config: dict[str, Any], vocab: TalkNetPhonemes, what: str) -> torch.nn.Module:
    layers, n_vocab = encoder_layers(config, what), len(vocab.labels)
    try:
        d_char = int(config["d_char"])
        if part == "durs":
            return TalkNetDurs(n_vocab, d_char, layers)
        if part == "pitch":
            return TalkNetPitch(n_vocab, d_char, vocab.pad, layers, float(config["f0_mean"]),
                                float(config["f0_std"]))
        return TalkNetSpect(n_vocab, d_char, vocab.pad, layers, int(config["n_mels"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArbenchError(f"{what}: its config lacks a TalkNet {part} setting: {exc!r}") from exc


def dataset_config(config: dict[str, Any]) -> dict[str, Any]:
    return ((config.get("train_ds") or {}).get("dataset") or {})


def build_hifigan(path: Path, n_mels: int, what: str) -> HiFiGANGenerator:
    """NeMo's HiFi-GAN generator from a `tts_hifigan`-style `.nemo` file: its own `generator` config, checked to
    take TalkNet's mels at TalkNet's sample rate."""
    config, state = read_nemo(path)
    try:
        hifigan_config = HiFiGANConfig.from_config(config["generator"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArbenchError(f"{what}: not a NeMo HiFi-GAN file this code supports ({exc!r}); give NGC's "
                           "tts_hifigan.nemo.") from exc
    rate = (config.get("preprocessor") or {}).get("sample_rate", config.get("sample_rate", SAMPLE_RATE))
    if hifigan_config.initial_input_size != n_mels or rate != SAMPLE_RATE:
        raise ArbenchError(f"{what}: this HiFi-GAN takes {hifigan_config.initial_input_size} mels at {rate} Hz; "
                           f"TalkNet's mel model gives {n_mels} mels at {SAMPLE_RATE} Hz. Give a vocoder trained "
                           "for TalkNet's mels (NGC tts_hifigan).")
    generator = HiFiGANGenerator(hifigan_config)
    load_into(generator, generator_state(state, hifigan_config), what)
    return generator


@register_method("talknet2-ljs")
class TalkNet2LJS(Method):
    """TalkNet 2 (durations, pitch, mel; NeMo's LJSpeech release) + NeMo's HiFi-GAN (or WaveGlow), for
    `tts-closed-speaker`."""

    description = ("TalkNet 2 LJSpeech (NeMo tts_en_talknet 1.0.0rc1: non-autoregressive duration, pitch and mel "
                   "networks; g2p_en phonemes) + NeMo's HiFi-GAN (tts_hifigan 1.0.0rc1; `--set vocoder=waveglow` "
                   "for WaveGlow, sigma 0.6)")
    modality = "tts"
    family = "non-ar"  # non-autoregressive: durations, pitch and all mel frames at once
    Config = TalkNetSettings
    waveglow_config: ClassVar[WaveGlowConfig] = WaveGlowConfig()

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        self._models: TalkNetModels | None = None
        self._g2p: Callable[[str], list[str]] | None = None
        self._sha: str | None = None

    def settings(self) -> dict[str, Any]:
        keep = {k: v for k, v in dataclasses.asdict(self.config).items() if not k.endswith("_weights")}
        if self.config.vocoder != "waveglow":
            del keep["waveglow_sigma"]  # HiFi-GAN has no noise: sigma changes nothing
        return {**keep, "sample_rate": SAMPLE_RATE, "frontend": g2p_version(), "upstream": UPSTREAM}

    def weight_files(self) -> list[tuple[Path, str]]:
        c = self.config
        wanted = [(TALKNET_WEIGHTS[part], getattr(c, f"{part}_weights")) for part in PARTS]
        wanted.append((HIFIGAN, c.hifigan_weights) if c.vocoder == "hifigan" else (WAVEGLOW, c.waveglow_weights))
        return require_all([lambda s=s, e=e: s.locate(e) for s, e in wanted], f"method {self.name}")

    def checkpoint_sha256(self) -> str | None:
        if self._sha is None:
            self._sha = combined_sha256(digest for _, digest in self.weight_files())
        return self._sha

    def g2p(self) -> Callable[[str], list[str]]:
        if self._g2p is None:
            self._g2p = load_g2p()
        return self._g2p

    def load(self) -> TalkNetModels:
        if self._models is None:
            (durs_path, _), (pitch_path, _), (spect_path, _), (vocoder_path, _) = self.weight_files()
            paths = {"durs": durs_path, "pitch": pitch_path, "spect": spect_path}
            read = {part: read_nemo(path) for part, path in paths.items()}
            spect_data = dataset_config(read["spect"][0])
            vocab = TalkNetPhonemes.from_config(spect_data.get("vocab") or {}, f"{self.name} ({spect_path.name})")
            for part in ("durs", "pitch"):
                other = dataset_config(read[part][0])
                if (other.get("vocab") or {}) != (spect_data.get("vocab") or {}) or \
                        bool(other.get("blanking")) != bool(spect_data.get("blanking")):
                    raise ArbenchError(f"{self.name}: the {part} and mel checkpoints use different vocabularies or "
                                       "blanking; give the three files of one TalkNet release.")
            nets = {}
            for part, path in paths.items():
                what = f"{self.name} ({path.name})"
                nets[part] = build_talknet(part, read[part][0], vocab, what)
                load_into(nets[part], encoder_state(*read[part]), what)
                nets[part] = nets[part].to(self.device).eval()
            what = f"{self.name} vocoder ({vocoder_path.name})"
            if self.config.vocoder == "hifigan":
                vocoder = build_hifigan(vocoder_path, nets["spect"].proj.out_channels, what)
            else:
                vocoder = WaveGlow(self.waveglow_config)
                load_into(vocoder, read_waveglow_state(vocoder_path), what)
            self._models = TalkNetModels(nets["durs"], nets["pitch"], nets["spect"], vocab,
                                         bool(spect_data.get("blanking", False)), vocoder.to(self.device).eval())
        return self._models

    def token_ids(self, requests: Sequence[Request], models: TalkNetModels) -> list[list[int]]:
        g2p = self.g2p()
        ids = [models.vocab.encode(g2p(str(r.condition.get("text", "")))) for r in requests]
        empty = [r.id for r, seq in zip(requests, ids) if not seq]
        if empty:
            raise InputError(f"{self.name}: requests {empty[:5]} have no phoneme or punctuation left after "
                             "g2p_en; give each utterance some English text.")
        return [interleave_blanks(seq, models.vocab.blank) if models.blanking else seq for seq in ids]

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        models = self.load()
        outputs = []
        for request, ids in zip(requests, self.token_ids(requests, models)):
            out = generate_mel(models.durs, models.pitch, models.spect, torch.tensor([ids], device=self.device))
            if int(out["durs"].sum()) == 0:
                raise InputError(f"{self.name}: request {request.id!r} got zero predicted frames; its text is "
                                 "too short to speak.")
            if isinstance(models.vocoder, HiFiGANGenerator):
                audio = models.vocoder(out["mel"])[0].float().cpu().numpy()
            else:
                generator = torch.Generator(device=self.device).manual_seed(request.seed)
                audio = models.vocoder.infer(out["mel"], self.config.waveglow_sigma, generator)[0].float().cpu().numpy()
            if self.config.peak_normalize:
                audio = audio / max(float(np.abs(audio).max()), 1e-12)
            outputs.append((audio.astype(np.float32), SAMPLE_RATE))
        return outputs
