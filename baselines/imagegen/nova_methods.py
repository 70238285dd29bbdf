"""The registered NOVA text-to-image generators (baaivision/NOVA, Apache-2.0 code and models), driven by any
text-to-image task (GenEval): `nova-d48w1024-sd512` (README GenEval 0.75) and the 1024 px models
`nova-d48w768-sdxl1024` / `nova-d48w1024-sdxl1024` / `nova-d48w1536-sdxl1024` (0.67 / 0.69 / 0.71).

Pipeline as upstream's `evaluations/geneval/sample.py` with `NOVAPipeline` (baaivision/NOVA@2cd254a):
- the prompt is tokenised by the released tokenizer (`tokenizer/`, Phi-2's CodeGen BPE, at most 256 tokens, no
  padding) and encoded by the released text encoder (`text_encoder/`, upstream's `PhiEncoderModel`: Phi-2's
  decoder with its final LayerNorm, causal attention). Both are delegated to transformers (`AutoTokenizer`,
  `PhiModel`: the same architecture and parameter names, checked against upstream's class in the golden test);
- the NOVA transformer (`baselines.imagegen.nova`, the project's code) generates the latent set by set: 128
  autoregressive steps on the cosine mask schedule, each set denoised by 25 flow-matching Euler steps of diffusers'
  `FlowMatchEulerDiscreteScheduler` configured by the released `scheduler/scheduler_config.json`, classifier-free
  guidance 7 against the learned null prompt;
- the latent is decoded by the released VAE (`vae/`, an SD / SDXL AutoencoderKL, delegated to diffusers'
  `AutoencoderKL`; upstream's own class has diffusers' names and config), scaled back by the config's
  `scaling_factor` (and `shift_factor` when set), and mapped to uint8 as upstream: x * 127.5 + 127.5, clamped,
  truncated.
Defaults are the GenEval script's: `--num_pred_steps 128 --num_diff_steps 25 --guidance_scale 7`, float16.

Weights: the released Hugging Face snapshot of each model, kept as a folder `$ARBENCH_HOME/weights/<model>/` (or
the folder named by the `model_dir` setting) with upstream's layout; every file is a WeightSpec, all missing ones
are named at once, and nothing is unpickled (safetensors and JSON only; the repository's `__*__.py` remote code is
not run). The transformer's `config.json` is read and must agree with the architecture the method declares.

Each request draws its set order and noise from its own generator seeded by `Request.seed` (the project's
convention; upstream draws a batch from one generator), so an image does not depend on its batch or rank.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch

from baselines.imagegen.checkpoints import combined_sha256, load_into, read_state_dict
from baselines.imagegen.nova import NOVAConfig, NOVATransformer, generate_image
from baselines.imagegen.sampling import request_generators
from harness.api import Request
from harness.errors import ArbenchError
from harness.protocols.text_to_image import TextToImage
from harness.registry import register_method
from harness.settings import Annotated, Field, NonNegativeFloat, PositiveInt
from harness.weights import WeightSpec, register_weights, require_all

NOVA_LICENSE = "Apache-2.0 (baaivision/NOVA code and models)"
HF = "https://huggingface.co/BAAI/{model}/resolve/main/"
#: The snapshot's files ARBench reads, by upstream's names (the Hugging Face listings of the model repositories).
#: The text encoder is a transformers checkpoint in two safetensors shards with their index.
NOVA_FILES = ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
              "tokenizer/tokenizer_config.json", "text_encoder/config.json",
              "text_encoder/model.safetensors.index.json", "text_encoder/model-00001-of-00002.safetensors",
              "text_encoder/model-00002-of-00002.safetensors", "transformer/config.json",
              "transformer/diffusion_pytorch_model.safetensors", "vae/config.json",
              "vae/diffusion_pytorch_model.safetensors")
#: sha256 the publisher shows (Hugging Face's LFS details); the other files' digests are recorded on first use.
PUBLISHED_SHA256 = {
    ("nova-d48w768-sdxl1024", "text_encoder/model-00001-of-00002.safetensors"):
        "7fbcdefa72edf7527bf5da40535b57d9f5bd3d16829b94a9d25d2b457df62e84",
}
#: The pipeline classes the released `model_index.json` names (upstream's loader; checked before loading).
MODEL_INDEX = {"scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": ["__text_encoder__", "PhiEncoderModel"],
               "transformer": ["__transformer__", "NOVATransformer3DModel"], "vae": ["__vae__", "AutoencoderKL"]}


def nova_weight_specs(model: str, what: str) -> tuple[WeightSpec, ...]:
    slug = lambda f: f.replace("/", "-").replace(".", "-").replace("_", "-").lower()  # noqa: E731
    return tuple(register_weights(WeightSpec(
        f"{model}-{slug(name)}", f"{model}/{name}", HF.format(model=model) + name,
        PUBLISHED_SHA256.get((model, name)), NOVA_LICENSE, f"NOVA {what}: {name}")) for name in NOVA_FILES)


@dataclass
class NOVASettings:
    """Upstream's GenEval sampling (evaluations/geneval/sample.py and docs/evaluation.md)."""

    num_pred_steps: PositiveInt = 128  # autoregressive (set) steps; NOVAPipeline's own default is 64
    num_diffusion_steps: Annotated[int, Field(ge=1, le=1000)] = 25
    guidance_scale: NonNegativeFloat = 7.0  # NOVAPipeline's own default is 5; <= 1 disables guidance
    precision: Literal["fp16", "fp32"] = "fp16"  # upstream's GenEval script builds the pipeline in float16
    model_dir: str = ""  # a folder with NOVA_FILES; default $ARBENCH_HOME/weights/<method name>


class NOVAMethod(TextToImage):
    """A released NOVA text-to-image snapshot: Phi-2 text states, set-by-set masked AR with a diffusion MLP."""

    family = "masked"  # random-order set-by-set prediction with a per-token diffusion head (MAR-like)
    Config = NOVASettings
    specs: ClassVar[tuple[WeightSpec, ...]] = ()
    #: What the method declares about the architecture; the released transformer/config.json must agree.
    expected: ClassVar[dict[str, Any]] = {}
    #: The pipeline classes the snapshot's model_index.json must name.
    model_index: ClassVar[dict[str, list[str]]] = MODEL_INDEX

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self._files: list[tuple[Path, str]] | None = None
        self._loaded = False

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k != "model_dir"}

    def weight_files(self) -> list[tuple[Path, str]]:
        """(path, sha256) of every snapshot file; one MissingAssetError names all that are missing."""
        if self._files is None:
            folder = self.config.model_dir
            checks = [(lambda s=spec: s.locate(Path(folder) / s.filename.split("/", 1)[1]) if folder else s.locate())
                      for spec in self.specs]
            self._files = require_all(checks, f"method {self.name}")
        return self._files

    def checkpoint_sha256(self) -> str | None:
        return combined_sha256(digest for _, digest in self.weight_files())

    def _path(self, name: str) -> Path:
        return self.weight_files()[NOVA_FILES.index(name)][0]

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.config.precision == "fp16" else torch.float32

    def transformer_config(self) -> NOVAConfig:
        path = self._path("transformer/config.json")
        raw = json.loads(path.read_text())
        if isinstance(raw.get("image_size"), int):  # upstream accepts one side for a square image
            raw["image_size"] = [raw["image_size"]] * 2
        # `arch` may be declared in part (the ViTs of the 512 px model, whose diffusion MLP no upstream file names)
        got = {k: raw.get(k)[: len(v)] if k == "arch" and isinstance(raw.get(k), list) else raw.get(k)
               for k, v in self.expected.items()}
        wrong = {k: (got[k], v) for k, v in self.expected.items() if got[k] != v}
        if wrong:
            listed = "; ".join(f"{k} is {got!r}, expected {want!r}" for k, (got, want) in wrong.items())
            raise ArbenchError(f"{path}: not the {self.name} transformer ({listed}). Put that model's snapshot there.")
        return NOVAConfig.from_upstream(raw, str(path))

    def load(self) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler  # delegated: diffusers' class
        from transformers import AutoTokenizer, PhiModel  # delegated: upstream's PhiEncoderModel is Phi-2's decoder

        if self.dtype == torch.float16 and not str(self.device).startswith("cuda"):
            raise ArbenchError(f"{self.name}: precision=fp16 (upstream's evaluation setting) needs a CUDA device; on "
                               f"{self.device} pass --set precision=fp32 (its own signature).")
        index = json.loads(self._path("model_index.json").read_text())
        odd = {k: index.get(k) for k, v in self.model_index.items() if index.get(k) != v}
        if odd:
            raise ArbenchError(f"{self._path('model_index.json')}: components {odd} differ from the released NOVA "
                               f"pipeline's {self.model_index}; ARBench implements those classes only.")
        config = self.transformer_config()
        model = NOVATransformer(config)
        path = self._path("transformer/diffusion_pytorch_model.safetensors")
        load_into(model, read_state_dict(path), f"{self.name} ({path.parent.name}/{path.name})")
        self._model = model.to(self.device, self.dtype).eval()
        root = self._path("model_index.json").parent
        self._scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(root / "scheduler"))
        self._tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
        self._text = PhiModel.from_pretrained(str(root / "text_encoder"), dtype=self.dtype,
                                              use_safetensors=True).to(self.device).eval()
        self._vae = self.load_vae(root / "vae")
        self._loaded = True

    def load_vae(self, folder: Path):
        """The released VAE (`vae/`): diffusers' AutoencoderKL for the text-to-image models."""
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(str(folder), dtype=self.dtype, use_safetensors=True).to(self.device).eval()

    @torch.no_grad()
    def prompt_states(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Phi-2 last hidden states of each prompt (docs/evaluation.md step 1: max_length 256, truncated)."""
        out = []
        for p in prompts:
            ids = self._tokenizer(p, max_length=self._model.config.text_token_len, truncation=True).input_ids
            ids = torch.as_tensor([ids], device=self.device, dtype=torch.int64)
            out.append(self._text(input_ids=ids).last_hidden_state[0])
        return out

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch: int = 16) -> np.ndarray:
        """Upstream's `decode_latents` (VAE batches of 16, the GenEval script's) + `pt_to_numpy`."""
        cfg = self._vae.config
        z = latents.to(self._vae.dtype) / cfg.scaling_factor
        z = z + cfg.shift_factor if cfg.get("shift_factor") else z
        images = torch.cat([self._vae.decode(part).sample for part in z.split(batch)])
        return images.permute(0, 2, 3, 1).mul(127.5).add(127.5).clamp(0, 255).byte().cpu().numpy()

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        prompts = self.check_prompts(requests)
        if not self._loaded:
            self.load()
        c = self.config
        latents = generate_image(self._model, self._scheduler, self.prompt_states(prompts),
                                 request_generators([r.seed for r in requests]), c.num_pred_steps,
                                 c.num_diffusion_steps, c.guidance_scale)
        return self.decode(latents)


def _nova(name: str, params: str, size: int, vae: str, geneval: float, expected: dict[str, Any]) -> type:
    cls = type(name.replace("-", "_").upper(), (NOVAMethod,), {
        "description": f"NOVA-{params} text-to-image, {size} px ({vae} VAE, Phi-2 text encoder): set-by-set masked "
                       f"AR, 128 steps, 25 flow-matching steps per set, CFG 7 (upstream GenEval script; README "
                       f"GenEval {geneval})",
        "specs": nova_weight_specs(name, f"{params} text-to-image {size} px"), "expected": expected,
        "__module__": __name__})
    return register_method(name)(cls)


# Declared architectures: the 1024 px ones are upstream's training configs (configs/nova_d48w*_sdxl1024.yaml);
# for the 512 px model upstream publishes no config in the repository, so only what its name and README say is
# declared (512 px, SD VAE, d48w1024 = the 16- and 32-layer ViTs of width 1024; the rest comes from its config).
_SDXL = {"image_size": [1024, 1024], "image_stride": 8, "image_dim": 4, "text_token_dim": 2560, "text_token_len": 256,
         "image_base_size": [64, 64], "video_base_size": [1, 32, 32]}
NOVA_T2I_METHODS = [
    _nova("nova-d48w1024-sd512", "0.6B", 512, "SD", 0.75,
          {"image_size": [512, 512], "image_stride": 8, "image_dim": 4, "text_token_dim": 2560,
           "arch": ["vit_d16w1024", "vit_d32w1024"]}),
    _nova("nova-d48w768-sdxl1024", "0.3B", 1024, "SDXL", 0.67,
          {**_SDXL, "arch": ["vit_d16w768", "vit_d32w768", "mlp_d6w768"]}),
    _nova("nova-d48w1024-sdxl1024", "0.6B", 1024, "SDXL", 0.69,
          {**_SDXL, "arch": ["vit_d16w1024", "vit_d32w1024", "mlp_d6w1024"]}),
    _nova("nova-d48w1536-sdxl1024", "1.4B", 1024, "SDXL", 0.71,
          {**_SDXL, "arch": ["vit_d16w1536", "vit_d32w1536", "mlp_d6w1536"]}),
]
