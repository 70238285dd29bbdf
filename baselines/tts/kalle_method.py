"""The registered zero-shot TTS method `kall-e` (xkx-hub/KALL-E, the released 1B model), for `seed-tts-en` and
`librispeech-pc` (voice cloning from the list's prompt recording and its transcript).

Pipeline as upstream's `infer_tools.infer` (infer.py at 12b0c94):
- text ids: the released tokenizer (Llama 3's byte-level BPE with 8 added tags, `tokenizer_dir/`, delegated to
  transformers' `AutoTokenizer`): `encode(prompt_text)` (with `<|begin_of_text|>`), then `encode(text)` without
  its first id, then `<|SPEECH_UNDERSTANDING_END|>`, `<|SPEECH_GENERATION_START|>`. Without a prompt:
  `encode(text)` and the two tags (upstream's random-voice mode);
- the prompt recording is read as mono 16 kHz, encoded by the Flow-VAE encoder, its last frame dropped, and
  each frame sampled from its Gaussian; these latents follow the text;
- the language model predicts one Gaussian per 80 ms frame until the KL rule ends the utterance
  (`end_kl_threshold` 0.5, at most `max_frames` 1000: upstream's defaults), and the Flow-VAE decoder samples
  every predicted frame and decodes a 16 kHz waveform (tanh output, returned as float; upstream writes it as
  int16 after multiplying by 32767).
Upstream runs on CUDA with its Llama built in float16 under `torch.autocast("cuda")` (float16): the default
`precision=fp16-autocast` does the same; `precision=fp32` runs everything in float32 (CPU or GPU, its own
signature).

Differences from upstream, on purpose: each request draws its noise (prompt latents, one draw per frame, the
decoder's draw) from its own `torch.Generator` seeded with `Request.seed`, where upstream uses the global
generator, so a waveform never depends on its batch; the AR loop uses a key/value cache (upstream re-runs the
whole sequence each step: the same arithmetic). A prompt that is not 16 kHz is resampled with the project's
resampler (`harness.features.audio.to_16k_mono`, polyphase Kaiser), where upstream's `librosa.load` uses
soxr; Seed-TTS-eval's and LibriSpeech's prompts are 16 kHz already, so nothing is resampled on those lists.

Weights (`$ARBENCH_HOME/weights/kall-e/` or `--set model_dir=...`, upstream's layout): `ckpt/model.pt` and
`ckpt/flowvae.pt` from the Hugging Face repository kxxia/KALL-E (published 2025-09-24 per upstream's README;
the file listing, sizes and checksums could not be read offline), and `tokenizer_dir/` from the GitHub
repository at the pinned commit. Both checkpoints are read with `torch.load(weights_only=True)` (plain state
dicts; never unpickled otherwise), checked name by name and shape by shape; the Flow-VAE's training-only
flow (`flow.*`) is dropped by prefix and its weight norm folded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import soundfile as sf
import torch

from baselines.imagegen.checkpoints import combined_sha256, load_into, read_state_dict
from baselines.imagegen.flowar_methods import precision_context
from baselines.tts.kalle import FlowVAE, FlowVAEConfig, KalleLM, llama_config
from baselines.tts.waveglow import fold_weight_norm
from harness.api import Method, Request
from harness.errors import ArbenchError, InputError
from harness.features.audio import to_16k_mono
from harness.registry import register_method
from harness.settings import Annotated, Field, Precision
from harness.weights import WeightSpec, register_weights, require_all

UPSTREAM = "xkx-hub/KALL-E@12b0c94d800e7e3f76285884c109c6273af3f7cf"
GITHUB = "https://raw.githubusercontent.com/xkx-hub/KALL-E/12b0c94d800e7e3f76285884c109c6273af3f7cf/"
HF = "https://huggingface.co/kxxia/KALL-E/resolve/main/"
KALLE_LICENSE = ("no licence stated (xkx-hub/KALL-E has no LICENSE file; the HF kxxia/KALL-E card was not readable "
                 "offline); the backbone has Llama-3.2-1B's shape and Llama 3's tokenizer, so Meta's Llama 3.2 "
                 "Community License may apply: research use only until checked")
#: The files ARBench reads, by upstream's paths (README "Model Download": ckpt/flowvae.pt, ckpt/model.pt).
KALLE_FILES = ("ckpt/model.pt", "ckpt/flowvae.pt", "tokenizer_dir/tokenizer.json",
               "tokenizer_dir/tokenizer_config.json", "tokenizer_dir/special_tokens_map.json")
#: sha256 of the files the pinned commit holds (the stored mirror lacks tokenizer.json's blob; the checkpoints'
#: digests are not published): the others' digests are recorded on first use and go into the signature.
KALLE_SHA256 = {
    "tokenizer_dir/tokenizer_config.json": "0929422661bbc582305fa902338ff6fe7aca5d097b10463331b6635ba97d1962",
    "tokenizer_dir/special_tokens_map.json": "1b1835caa5b4d70acaa210fa222b0036f1882f9525c4660fd4810fb3e1e40ff8",
}
KALLE_SPECS = tuple(register_weights(WeightSpec(
    f"kall-e-{name.replace('/', '-').replace('.', '-').replace('_', '-').lower()}", f"kall-e/{name}",
    (HF + name.split("/", 1)[1]) if name.startswith("ckpt/") else GITHUB + name, KALLE_SHA256.get(name),
    KALLE_LICENSE, f"KALL-E {name}")) for name in KALLE_FILES)
UNDERSTANDING_END, GENERATION_START = "<|SPEECH_UNDERSTANDING_END|>", "<|SPEECH_GENERATION_START|>"


@dataclass
class KalleSettings:
    """Upstream's `Kalle.infer` defaults (`end_disp_kl_thres`, `max_length`) and its CUDA autocast."""

    end_kl_threshold: Annotated[float, Field(gt=0, description="KL per dimension to N(1, e^2) that ends speech")] = 0.5
    max_frames: Annotated[int, Field(ge=5, le=5000, description="80 ms frames; upstream 1000 (80 s)")] = 1000
    precision: Precision = "fp16-autocast"
    model_dir: str = ""  # a folder with KALLE_FILES; default $ARBENCH_HOME/weights/kall-e


@register_method("kall-e")
class KallE(Method):
    description = ("KALL-E 1B (Llama decoder predicting Flow-VAE latent Gaussians at 12.5 Hz, KL stop rule), "
                   "zero-shot from the prompt recording; upstream infer.py defaults")
    modality = "tts"
    family = "continuous-ar"
    Config = KalleSettings
    weights_license = KALLE_LICENSE
    flowvae_config: ClassVar[FlowVAEConfig] = FlowVAEConfig()
    #: Overrides of upstream's Llama config (none for the released model; the tests use a small one).
    llama_overrides: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        precision_context(self.config.precision, device, self.name)  # fp16 autocast refuses a non-CUDA device now
        self._files: list[tuple[Path, str]] | None = None
        self._loaded: tuple[KalleLM, FlowVAE, Any] | None = None

    def settings(self) -> dict[str, Any]:
        keep = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "model_dir"}
        return {**keep, "sample_rate": self.flowvae_config.sampling_rate, "upstream": UPSTREAM}

    def weight_files(self) -> list[tuple[Path, str]]:
        """(path, sha256) of every file; one MissingAssetError names all that are missing."""
        if self._files is None:
            folder = self.config.model_dir
            checks = [(lambda s=spec: s.locate(Path(folder) / s.filename.split("/", 1)[1]) if folder else s.locate())
                      for spec in KALLE_SPECS]
            self._files = require_all(checks, f"method {self.name}")
        return self._files

    def checkpoint_sha256(self) -> str | None:
        return combined_sha256(digest for _, digest in self.weight_files())

    def load(self) -> tuple[KalleLM, FlowVAE, Any]:
        if self._loaded is None:
            from transformers import AutoTokenizer  # delegated: upstream's tokenizer class

            (lm_path, _), (vae_path, _), (tokenizer_json, _), _, _ = self.weight_files()
            vae = FlowVAE(self.flowvae_config)
            vae_state = fold_weight_norm(read_flowvae_state(vae_path))
            load_into(vae, {k: v for k, v in vae_state.items() if not k.startswith("flow.")},
                      f"{self.name} Flow-VAE ({vae_path.name})")
            with torch.device("meta"):
                lm = KalleLM(llama_config(**self.llama_overrides), self.flowvae_config.latent_dim)
            load_into(lm, kalle_state(read_state_dict(lm_path, what="a KALL-E checkpoint")),
                      f"{self.name} ({lm_path.name})", assign=True)
            lm.float()  # upstream's audio_linear and distribution_linear are float32 whatever the checkpoint holds
            if self.config.precision == "fp16-autocast":
                lm.base_model.model.half()  # upstream's config builds the Llama in float16 (`torch_dtype`)
            # the rotary table is no checkpoint entry (built on the meta device above): built now, after the cast,
            # so it stays float32 as upstream's (a float16 table would turn positions by up to 0.1% wrong angles)
            lm.base_model.model.rotary_emb = type(lm.base_model.model.rotary_emb)(lm.base_model.model.config)
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_json.parent), local_files_only=True)
            self._loaded = (lm.to(self.device).eval(), vae.float().to(self.device).eval(), tokenizer)
        return self._loaded

    def text_ids(self, tokenizer, text: str, prompt_text: str | None) -> list[int]:
        tags = [tokenizer.convert_tokens_to_ids(UNDERSTANDING_END), tokenizer.convert_tokens_to_ids(GENERATION_START)]
        if prompt_text is None:
            return list(tokenizer.encode(text)) + tags
        return list(tokenizer.encode(prompt_text)) + list(tokenizer.encode(text))[1:] + tags

    def check(self, requests: Sequence[Request]) -> None:
        """Refuse, before generating, requests with no text, a prompt recording without its transcript (upstream
        asserts both or neither), or a prompt file that is missing, unreadable or shorter than two frames; the
        first offenders are named."""
        problems = []
        for r in requests:
            text, wav = str(r.condition.get("text", "")), str(r.condition.get("prompt_wav", "") or "")
            if not text.strip():
                problems.append(f"{r.id}: empty text")
            elif wav and not str(r.condition.get("prompt_text", "")).strip():
                problems.append(f"{r.id}: prompt recording {wav} has no prompt_text")
            elif wav and not Path(wav).is_file():
                problems.append(f"{r.id}: prompt recording {wav} is missing")
            elif wav and (problem := self.prompt_problem(wav)):
                problems.append(f"{r.id}: prompt recording {wav} {problem}")
        if problems:
            raise InputError(f"{self.name}: {len(problems)} requests cannot be synthesised: "
                             + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
                             + ". Give every utterance a text, and each prompt recording its transcript.")

    def prompt_problem(self, path: str) -> str | None:
        """Why a prompt file cannot be used (read from its header), or None."""
        try:
            info = sf.info(path)
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types for unknown or corrupt files
            return f"is unreadable ({type(exc).__name__})"
        least = 2 * self.flowvae_config.hop / self.flowvae_config.sampling_rate
        if info.frames < least * info.samplerate:
            return f"is {info.frames / info.samplerate:.3f} s long; KALL-E needs at least {least:.2f} s"
        return None

    def prompt_audio(self, path: str) -> torch.Tensor:
        problem = self.prompt_problem(path)
        if problem:
            raise InputError(f"{self.name}: prompt recording {path} {problem}.")
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = samples[:, 0] if samples.shape[1] == 1 and rate == 16000 else to_16k_mono(samples, rate)
        return torch.from_numpy(np.ascontiguousarray(audio)).to(self.device)

    @torch.no_grad()
    def synthesize(self, request: Request) -> tuple[np.ndarray, int]:
        lm, vae, tokenizer = self.load()
        c = self.config
        generator = torch.Generator(device=self.device).manual_seed(int(request.seed))
        wav = str(request.condition.get("prompt_wav", "") or "")
        text = str(request.condition["text"])
        latents = vae.prompt_latents(self.prompt_audio(wav), generator) if wav else None
        ids = self.text_ids(tokenizer, text, str(request.condition.get("prompt_text", "")) if wav else None)
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        with precision_context(c.precision, self.device, self.name):
            distributions = lm.infer(input_ids, latents, generator, c.end_kl_threshold, c.max_frames)
            audio = vae.inference_from_latents(distributions, generator)
        return audio.reshape(-1).float().cpu().numpy(), self.flowvae_config.sampling_rate

    def generate(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        self.check(requests)
        return [self.synthesize(r) for r in requests]


def read_flowvae_state(path: Path) -> dict[str, torch.Tensor]:
    """The Flow-VAE generator's tensors: upstream saves `{'generator': state_dict, ...}` (HiFi-GAN style)."""
    from baselines.imagegen.checkpoints import load_checkpoint_file

    saved = load_checkpoint_file(path, "a KALL-E Flow-VAE checkpoint")
    state = saved.get("generator", saved) if isinstance(saved, dict) else saved
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArbenchError(f"{path} holds no 'generator' state dict (upstream's infer.py reads "
                           "torch.load(...)['generator']). Give the released ckpt/flowvae.pt.")
    return state


def kalle_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream's `Kalle` state dict for `KalleLM`: the tied `base_model.lm_head.weight` is not used for speech;
    upstream's strict `load_state_dict` copies it last into the tensor it shares with the embeddings, so where
    the two differ it is what upstream embeds text with, and it is taken as the embeddings here too."""
    state = dict(state)
    head = state.pop("base_model.lm_head.weight", None)
    if head is not None:
        state["base_model.model.embed_tokens.weight"] = head
    return state
