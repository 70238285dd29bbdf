"""The registered closed-speaker TTS methods `flowtron-ljs` and `flowtron-libritts` (Flowtron + WaveGlow).

Defaults are NVIDIA/flowtron@d149bc4's `inference.py` and `config.json`: z ~ N(0, 0.5^2) of 400 frames
(`-s 0.5`, `-n 400`), gate threshold 0.5 (`-g`), ARPAbet substitution per word with probability 0.5
(`p_arpabet`), WaveGlow sigma 0.8 (hard-coded there), and the waveform divided by its peak absolute value
("normalize audio for now"). Upstream seeds the whole process once (`--seed 1234`); here every request draws
its z, its WaveGlow noise (in that order, from one `torch.Generator` seeded with `Request.seed`) and its
ARPAbet choices (`random.Random(Request.seed)`) on its own, so a waveform never depends on its batch.
Upstream runs WaveGlow in float16 on the GPU (its 1x1 convs in float32); here it runs in float32.

Weights: the Google Drive files of upstream's README. Flowtron's files hold a `state_dict` and are read with
`torch.load(weights_only=True)`. WaveGlow's file pickles the whole upstream module (`glow.WaveGlow`); in torch's
zip format it is read with `weights_only=True` too, upstream's module classes mapped to an inert placeholder that
only holds attributes (no upstream code is imported or run); in the pre-1.6 format (which `weights_only` cannot
read when it holds modules) by an explicit allow-list unpickler with the same mapping and otherwise only torch's
tensor-rebuild functions. Its tensors are then taken by their state-dict names. A file that needs anything else
is refused with the command that converts it to safetensors in upstream's environment.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
import types
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from baselines.imagegen.checkpoints import combined_sha256, load_into, read_state_dict
from baselines.tts.flowtron import Flowtron, FlowtronConfig
from baselines.tts.flowtron_text import SYMBOLS, load_cmudict, text_to_ids
from baselines.tts.waveglow import WaveGlow, WaveGlowConfig, fold_weight_norm
from harness.api import Method, Request
from harness.errors import ArbenchError, InputError
from harness.registry import register_method
from harness.settings import Annotated, Field, NonNegativeFloat, Probability
from harness.weights import WeightSpec, register_weights, require_all

UPSTREAM = "NVIDIA/flowtron@d149bc466b8325026aeb68aa2fef24337e7463b2"
SAMPLE_RATE = 22050
FLOWTRON_LICENSE = "Apache-2.0 (NVIDIA/flowtron code and released models)"
# The publishers list no checksums; sha256=None makes the digest of the file used go into the signature.
FLOWTRON_LJS = register_weights(WeightSpec(
    "flowtron-ljs", "flowtron_ljs.pt", "https://drive.google.com/open?id=1Cjd6dK_eFz6DE0PKXKgKxrzTUqzzUDW-", None,
    FLOWTRON_LICENSE, "Flowtron LJSpeech (2 flows, 1 speaker; upstream README 'Flowtron LJS')"))
FLOWTRON_LIBRITTS = register_weights(WeightSpec(
    "flowtron-libritts", "flowtron_libritts.pt",
    "https://drive.google.com/open?id=1KhJcPawFgmfvwV7tQAOeC253rYstLrs8", None, FLOWTRON_LICENSE,
    "Flowtron LibriTTS train-clean-100 (2 flows, 123 speakers; upstream README 'Flowtron LibriTTS')"))
WAVEGLOW = register_weights(WeightSpec(
    "waveglow-256channels-v4", "waveglow_256channels_v4.pt",
    "https://drive.google.com/open?id=1rpK8CzAAirq9sWZhe9nlfvxMF1dRgFbF", None,
    "BSD-3-Clause (NVIDIA/waveglow code and released model)",
    "WaveGlow LJSpeech vocoder, 256 channels, 22.05 kHz (the vocoder Flowtron's README names)"))
CMUDICT = register_weights(WeightSpec(
    "flowtron-cmudict", "cmudict_dictionary",
    "https://raw.githubusercontent.com/NVIDIA/flowtron/d149bc466b8325026aeb68aa2fef24337e7463b2/data/cmudict_dictionary",
    "4366f2c46b4f5b282e35fca0d4e566b71f4df9a39a41672b72ddcddd03ab19c1",
    "CMUdict 0.07 licence (BSD-style, Carnegie Mellon University)",
    "CMUdict 0.07 as Flowtron ships it (ARPAbet for Flowtron's text frontend)"))

#: LibriTTS speaker numbers in the order of the speaker embedding: upstream's `create_speaker_lookup_table`
#: sorts the training filelist's ids *as strings* (np.unique of text), so index 0 is "1069", not "40".
#: From filelists/libritts_train_clean_100_audiopath_text_sid_shorterthan10s_atleast5min_train_filelist.txt.
LIBRITTS_SPEAKERS = tuple(int(s) for s in sorted(str(n) for n in (
    40, 78, 83, 87, 118, 125, 196, 200, 250, 254, 374, 405, 446, 460, 587, 669, 696, 730, 831, 887, 1069, 1088, 1116,
    1246, 1263, 1502, 1578, 1841, 1867, 1963, 1970, 2092, 2136, 2182, 2196, 2289, 2416, 2436, 2836, 2843, 2911, 2952,
    3240, 3242, 3259, 3436, 3486, 3526, 3664, 3857, 3879, 3982, 3983, 4018, 4051, 4088, 4160, 4195, 4267, 4297, 4362,
    4397, 4406, 4640, 4680, 4788, 5022, 5104, 5322, 5339, 5393, 5652, 5678, 5703, 5750, 5808, 6019, 6064, 6078, 6081,
    6147, 6181, 6209, 6272, 6367, 6385, 6415, 6437, 6454, 6476, 6529, 6818, 6836, 6848, 7059, 7067, 7078, 7178, 7190,
    7226, 7278, 7302, 7367, 7402, 7447, 7505, 7511, 7794, 7800, 8051, 8088, 8098, 8108, 8123, 8238, 8312, 8324, 8419,
    8468, 8609, 8629, 8770, 8838)))

# -- reading the pickled WaveGlow module without running upstream code ----------------------------------------
#: The globals a released WaveGlow file names besides tensors and containers: upstream's classes (the file was
#: saved from NVIDIA/waveglow's `glow.py`), the torch.nn modules inside them and the weight-norm hook.
WAVEGLOW_PICKLED_CLASSES = (
    "glow.WaveGlow", "glow.WN", "glow.Invertible1x1Conv", "torch.nn.modules.conv.Conv1d",
    "torch.nn.modules.conv.ConvTranspose1d", "torch.nn.modules.container.ModuleList",
    "torch.nn.utils.weight_norm.WeightNorm")
#: Modules pickled by torch < 1.0 call this to restore their `_backend` attribute; it is answered with None.
LEGACY_BACKEND = "torch.nn.backends.thnn._get_thnn_function_backend"
CONVERT_HINT = ("Convert it to safetensors in upstream's environment (a checkout of NVIDIA/waveglow, or flowtron's "
                "tacotron2/waveglow, on sys.path) and pass the result with --set waveglow_weights=...: python -c \"import "
                "sys, torch; sys.path.insert(0, '.'); from safetensors.torch import save_file; m = torch.load('{name}', "
                "weights_only=False)['model']; save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, "
                "'{stem}.safetensors')\"")


class PickledObject:
    """Stands in for an allow-listed class while unpickling: it only receives the pickled attributes (the pickle
    BUILD step sets `__dict__`); nothing of the original class is imported or called."""

    dump_patches = False  # read by torch's legacy loader when the saved class source differs (it always does)


def _legacy_backend():
    return None


class _AllowListUnpickler(pickle.Unpickler):
    """For torch's pre-1.6 file format, which `weights_only=True` cannot read when it holds modules (that format
    stores each module class's source as a persistent id): resolves only torch's tensor-rebuild functions, plain
    containers, and upstream's classes (as `PickledObject`); any other global is refused."""

    SAFE = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
            ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
            ("collections", "OrderedDict"), ("builtins", "set")}

    def find_class(self, module: str, name: str):
        module = "builtins" if module == "__builtin__" else module  # protocol-2 pickles name Python 2's module
        full = f"{module}.{name}"
        if full in WAVEGLOW_PICKLED_CLASSES:
            return PickledObject
        if full == LEGACY_BACKEND:
            return _legacy_backend
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Unsupported global: {full} is not on the WaveGlow allow-list")


#: What torch.load needs of a pickle module: the restricted Unpickler, and `load` for the format's header pickles.
_ALLOW_LIST_PICKLE = types.ModuleType("waveglow_allow_list_pickle")
_ALLOW_LIST_PICKLE.Unpickler = _AllowListUnpickler
_ALLOW_LIST_PICKLE.load = lambda f, **kw: _AllowListUnpickler(f, **kw).load()


def _module_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """A pickled module tree's parameters and persistent buffers under their state-dict names."""
    state: dict[str, torch.Tensor] = {}
    attrs = getattr(obj, "__dict__", {})
    skipped = attrs.get("_non_persistent_buffers_set") or set()
    for key in ("_parameters", "_buffers"):
        for name, tensor in (attrs.get(key) or {}).items():
            if tensor is not None and name not in skipped:
                state[prefix + name] = tensor.detach() if isinstance(tensor, torch.Tensor) else tensor
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            state.update(_module_tensors(child, f"{prefix}{name}."))
    return state


def read_waveglow_state(path: Path) -> dict[str, torch.Tensor]:
    """WaveGlow's weights by upstream's state-dict names, weight norm folded, from the released pickle
    (`{'model': WaveGlow, ...}`), a plain state dict, or safetensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return fold_weight_norm(read_state_dict(path, what="a WaveGlow checkpoint"))
    allowed = [(PickledObject, name) for name in WAVEGLOW_PICKLED_CLASSES] + [(_legacy_backend, LEGACY_BACKEND)]
    try:
        if zipfile.is_zipfile(path):
            with torch.serialization.safe_globals(allowed):
                saved = torch.load(path, map_location="cpu", weights_only=True)
        else:  # torch < 1.6 format (the 2018-2019 WaveGlow releases): the explicit allow-list unpickler
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "source code of class ... has changed": it is a placeholder
                saved = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_ALLOW_LIST_PICKLE)
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported with the conversion command
        lines = str(exc).splitlines() or [""]
        reason = next((line.strip() for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0])
        raise ArbenchError(f"{path} could not be read as a WaveGlow checkpoint without running its code "
                           f"({type(exc).__name__}: {reason[:300]}). "
                           + CONVERT_HINT.format(name=path.name, stem=path.stem)) from exc
    model = saved.get("model", saved) if isinstance(saved, dict) else saved
    if isinstance(model, PickledObject):
        state = _module_tensors(model)
    elif isinstance(model, (dict, OrderedDict)) and all(isinstance(v, torch.Tensor) for v in model.values()):
        state = dict(model)
    else:
        raise ArbenchError(f"{path} holds neither a pickled WaveGlow module under 'model' nor a state dict. "
                           + CONVERT_HINT.format(name=path.name, stem=path.stem))
    return fold_weight_norm(state)


def read_flowtron_state(path: Path) -> dict[str, torch.Tensor]:
    """Flowtron's released files: `{'state_dict': ..., ...}` (read with weights_only=True)."""
    try:
        return read_state_dict(path, what="a Flowtron checkpoint")
    except ArbenchError as exc:
        raise ArbenchError(f"{exc} A training checkpoint of upstream's train.py pickles the whole model under 'model'; "
                           "save its state dict in upstream's environment: python -c \"import torch; from flowtron import "
                           f"Flowtron; m = torch.load('{Path(path).name}', weights_only=False)['model']; "
                           f"torch.save({{'state_dict': m.state_dict()}}, '{Path(path).stem}_state_dict.pt')\"") from exc


#: Symbol ids that are letters or ARPAbet phones: a text without one has nothing to say.
SPEAKABLE = frozenset(i for i, s in enumerate(SYMBOLS) if s.isascii() and s.isalpha() or s.startswith("@"))


# -- the method ------------------------------------------------------------------------------------------------
@dataclass
class FlowtronSettings:
    """inference.py's arguments (-s, -g, -n, -i), its hard-coded WaveGlow sigma and peak normalisation,
    config.json's `p_arpabet`, and `Flowtron.infer`'s attention temperature; weight paths (not in the signature)."""

    sigma: NonNegativeFloat = 0.5
    gate_threshold: Probability = 0.5
    n_frames: Annotated[int, Field(ge=1, le=20_000, description="frames of z: the longest output, 256 samples each")] = 400
    waveglow_sigma: NonNegativeFloat = 0.8
    p_arpabet: Probability = 0.5
    attention_temperature: Annotated[float, Field(gt=0)] = 1.0
    speaker_id: int = 0
    peak_normalize: bool = True
    flowtron_weights: str = ""
    waveglow_weights: str = ""
    cmudict: str = ""


@dataclass
class FlowtronLibriTTSSettings(FlowtronSettings):
    speaker_id: int = 40  # a train-clean-100 speaker; upstream has no default (-i is required)


class FlowtronMethod(Method):
    """Flowtron text-to-mel + WaveGlow vocoder for one voice of a closed speaker set."""

    modality = "tts"
    family = "ar-flow"
    Config = FlowtronSettings
    flowtron_spec: ClassVar[WeightSpec]
    flowtron_config: ClassVar[FlowtronConfig]
    waveglow_config: ClassVar[WaveGlowConfig] = WaveGlowConfig()
    speakers: ClassVar[tuple[int, ...]] = (0,)

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        if self.config.speaker_id not in self.speakers:
            shown = ", ".join(map(str, self.speakers[:12])) + (" ..." if len(self.speakers) > 12 else "")
            raise InputError(f"{self.name} has no speaker {self.config.speaker_id}; its speakers are {shown} "
                             f"(set speaker_id=...).")
        self._models: tuple[Flowtron, WaveGlow, dict] | None = None
        self._sha: str | None = None

    def settings(self) -> dict[str, Any]:
        keep = {k: v for k, v in dataclasses.asdict(self.config).items()
                if not k.endswith("_weights") and k != "cmudict"}
        return {**keep, "sample_rate": SAMPLE_RATE, "waveglow_dtype": "float32", "upstream": UPSTREAM}

    def weight_files(self) -> list[tuple[Path, str]]:
        c = self.config
        wanted = [(self.flowtron_spec, c.flowtron_weights), (WAVEGLOW, c.waveglow_weights), (CMUDICT, c.cmudict)]
        return require_all([lambda s=s, e=e: s.locate(e) for s, e in wanted], f"method {self.name}")

    def checkpoint_sha256(self) -> str | None:
        if self._sha is None:
            self._sha = combined_sha256(digest for _, digest in self.weight_files())
        return self._sha

    def load(self) -> tuple[Flowtron, WaveGlow, dict]:
        if self._models is None:
            (flowtron_path, _), (waveglow_path, _), (cmudict_path, _) = self.weight_files()
            flowtron = Flowtron(self.flowtron_config)
            load_into(flowtron, read_flowtron_state(flowtron_path), f"{self.name} ({flowtron_path.name})")
            waveglow = WaveGlow(self.waveglow_config)
            load_into(waveglow, read_waveglow_state(waveglow_path), f"{self.name} vocoder ({waveglow_path.name})")
            self._models = (flowtron.to(self.device).eval(), waveglow.to(self.device).eval(),
                            load_cmudict(str(cmudict_path)))
        return self._models

    def text_ids(self, requests: Sequence[Request], cmudict: dict) -> list[list[int]]:
        """Every request's symbol ids (its own ARPAbet draws); refuses, naming them, texts it cannot speak."""
        ids = [text_to_ids(str(r.condition.get("text", "")), cmudict, self.config.p_arpabet, random.Random(r.seed))
               for r in requests]
        empty = [r.id for r, seq in zip(requests, ids) if len(seq) < 2 or not SPEAKABLE.intersection(seq)]
        if empty:
            raise InputError(f"{self.name}: requests {empty[:5]} have no letter or ARPAbet symbol, or fewer than 2 "
                             "symbols, left after Flowtron's cleaners (its text encoder normalises over the "
                             "sequence); give each utterance some English text.")
        return ids

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        flowtron, waveglow, cmudict = self.load()
        c = self.config
        speaker = torch.tensor([self.speakers.index(c.speaker_id)], device=self.device)
        outputs = []
        for request, ids in zip(requests, self.text_ids(requests, cmudict)):
            generator = torch.Generator(device=self.device).manual_seed(request.seed)
            residual = torch.randn(1, flowtron.cfg.n_mel_channels, c.n_frames, generator=generator,
                                   device=self.device) * c.sigma
            text = torch.tensor([ids], device=self.device)
            mel, _ = flowtron.infer(residual, speaker, text, c.gate_threshold, c.attention_temperature)
            audio = waveglow.infer(mel, c.waveglow_sigma, generator)[0].float().cpu().numpy()
            if c.peak_normalize:
                audio = audio / max(float(np.abs(audio).max()), 1e-12)
            outputs.append((audio.astype(np.float32), SAMPLE_RATE))
        return outputs


@register_method("flowtron-ljs")
class FlowtronLJS(FlowtronMethod):
    description = ("Flowtron LJSpeech (autoregressive flow, 2 steps) + WaveGlow; inference.py defaults: sigma 0.5, "
                   "gate 0.5, 400 frames, WaveGlow sigma 0.8, p_arpabet 0.5")
    flowtron_spec = FLOWTRON_LJS
    flowtron_config = FlowtronConfig(n_speakers=1)


@register_method("flowtron-libritts")
class FlowtronLibriTTS(FlowtronMethod):
    description = ("Flowtron LibriTTS (123 train-clean-100 speakers; speaker_id = LibriTTS speaker number) + WaveGlow; "
                   "inference.py defaults")
    Config = FlowtronLibriTTSSettings
    flowtron_spec = FLOWTRON_LIBRITTS
    flowtron_config = FlowtronConfig(n_speakers=len(LIBRITTS_SPEAKERS))
    speakers = LIBRITTS_SPEAKERS
