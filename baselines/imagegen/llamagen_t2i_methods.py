"""The registered LlamaGen text-to-image generators: `llamagen-t2i-xl-256` (stage 1) and `llamagen-t2i-xl-512`
(stage 2), driven by any text-to-image task (GenEval).

Pipeline as upstream's `autoregressive/sample/sample_t2i.py` (FoundationVision/LlamaGen@ce98ec4): the prompt is
cleaned, tokenised and encoded by FLAN-T5-XL (transformers' `T5EncoderModel`, delegated, 120 tokens padded on the
right), laid out with the valid tokens last, and fed to the t2i GPT-XL (`baselines.imagegen.llamagen_t2i`); image
tokens are sampled with classifier-free guidance and decoded by the t2i VQ tokenizer (`vq_ds16_t2i.pt`, the VQ-16
architecture of `baselines.imagegen.vq_decoder`). Defaults are upstream's sampling arguments: cfg 7.5, top-k 1000,
top-p 1.0, temperature 1.0, guidance on every token, bf16 for T5 and the GPT (the VQ decoder in float32).

Each request's tokens are drawn from its own generator seeded by `Request.seed` (the project's convention;
upstream draws a batch from one global generator), so an image does not depend on its batch.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from baselines.imagegen.checkpoints import combined_sha256, load_into, read_state_dict
from baselines.imagegen.llamagen_gpt import GPT_CONFIGS, GPTConfig
from baselines.imagegen.llamagen_t2i import CAPTION_DIM, CAPTION_TOKENS, LlamaGenT2I, generate_t2i, left_pad_layout, t2i_config
from baselines.imagegen.sampling import SamplerConfig, request_generators
from baselines.imagegen.vq_decoder import ENCODER_PREFIXES, VQConfig, VQDecoder, to_uint8
from harness.api import Request
from harness.errors import ArbenchError, InputError
from harness.protocols.text_to_image import TextToImage
from harness.registry import register_method
from harness.settings import Annotated, Field, Literal, NonNegativeFloat, PositiveFloat, TopK, TopP
from harness.weights import WeightSpec, register_weights, require_all

HF_T2I = "https://huggingface.co/peizesun/llamagen_t2i/resolve/main/"
T2I_LICENSE = "MIT (FoundationVision/LlamaGen); trained on LAION-COCO and internal data (research use)"
HF_FLAN_T5_XL = "https://huggingface.co/google/flan-t5-xl/resolve/main/"
T5_LICENSE = "Apache-2.0 (google/flan-t5-xl)"
# Neither publisher lists checksums in its README; sha256=None makes `locate` record the digest of the file used,
# and the run signature carries the combined digest (checkpoint_sha256).
LLAMAGEN_VQ_T2I = register_weights(WeightSpec(
    "llamagen-vq-ds16-t2i", "vq_ds16_t2i.pt", HF_T2I + "vq_ds16_t2i.pt", None, T2I_LICENSE,
    "LlamaGen VQ tokenizer for text-to-image, downsample 16, codebook 16384 x 8"))
T2I_XL_STAGE1_256 = register_weights(WeightSpec(
    "llamagen-t2i-xl-stage1-256", "t2i_XL_stage1_256.pt", HF_T2I + "t2i_XL_stage1_256.pt", None, T2I_LICENSE,
    "LlamaGen-XL (775M) text-to-image, stage 1 (LAION-COCO 50M), 256 px"))
T2I_XL_STAGE2_512 = register_weights(WeightSpec(
    "llamagen-t2i-xl-stage2-512", "t2i_XL_stage2_512.pt", HF_T2I + "t2i_XL_stage2_512.pt", None, T2I_LICENSE,
    "LlamaGen-XL (775M) text-to-image, stage 2 (internal 10M), 512 px"))
#: FLAN-T5-XL as transformers loads it from a folder (safetensors shards only: never unpickled). Kept together
#: in $ARBENCH_HOME/weights/flan-t5-xl/ (or a folder named by the `t5_dir` setting).
FLAN_T5_XL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                    "model-00002-of-00002.safetensors")
FLAN_T5_XL = tuple(register_weights(WeightSpec(
    f"flan-t5-xl-{name.rsplit('.', 1)[0].replace('.', '-').replace('_', '-')}", f"flan-t5-xl/{name}", HF_FLAN_T5_XL + name, None, T5_LICENSE,
    f"FLAN-T5-XL text encoder (LlamaGen's caption encoder): {name}")) for name in FLAN_T5_XL_FILES)
T5_MAX_LENGTH = CAPTION_TOKENS  # upstream --t5-feature-max-len 120

_PLAIN = re.compile(r"[a-z ]*")


def clean_prompt(text: str) -> str:
    """Upstream's caption cleaning (T5Embedder.clean_caption, applied twice) for plain prompts.

    For text of lower-case letters and spaces (after lower-casing), which is every GenEval prompt, upstream's
    cleaning reduces to lower-case, collapse whitespace and strip. Its other rules (ftfy, BeautifulSoup, URL,
    punctuation and id regexes) are not re-implemented: other text is refused rather than encoded differently.
    """
    lowered = text.strip().lower()
    if not _PLAIN.fullmatch(lowered):
        odd = sorted(set(re.sub(r"[a-z ]", "", lowered)))
        raise InputError(f"prompt {text!r} has characters {''.join(odd)!r}: this LlamaGen text-to-image method "
                         "re-implements upstream's caption cleaning only for letters and spaces (all GenEval "
                         "prompts). Remove them or clean the prompt as upstream's language/t5.py does.")
    return re.sub(r"\s+", " ", lowered).strip()


class T5CaptionEncoder:
    """FLAN-T5 encoder states for prompts, as upstream's `T5Embedder.get_text_embeddings` computes them:
    tokens padded on the right to 120 (truncated beyond), last hidden state, attention mask."""

    def __init__(self, directory: Path, device: str, dtype: torch.dtype, max_length: int = T5_MAX_LENGTH):
        from transformers import AutoTokenizer, T5EncoderModel  # delegated: transformers' T5 is the reference

        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(str(directory), local_files_only=True, use_safetensors=True,
                                                    dtype=dtype).to(device).eval()
        self.device, self.max_length = device, max_length

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer([clean_prompt(p) for p in prompts], max_length=self.max_length,
                               padding="max_length", truncation=True, return_attention_mask=True,
                               add_special_tokens=True, return_tensors="pt")
        mask = batch["attention_mask"].to(self.device)
        states = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask).last_hidden_state
        return states, mask


@dataclass
class LlamaGenT2ISettings:
    """Upstream `sample_t2i.py` / `sample_t2i_ddp.py` defaults."""

    cfg_scale: NonNegativeFloat = 7.5
    cfg_interval: Annotated[int, Field(ge=-1)] = -1  # upstream's generate(): guide every token
    temperature: PositiveFloat = 1.0
    top_k: TopK = 1000
    top_p: TopP = 1.0
    precision: Literal["bf16", "fp32"] = "bf16"  # upstream --precision bf16 (T5 and GPT); "fp32" for float32
    gpt_weights: str = ""
    vq_weights: str = ""
    t5_dir: str = ""  # a folder with FLAN_T5_XL_FILES; default $ARBENCH_HOME/weights/flan-t5-xl


class LlamaGenT2IMethod(TextToImage):
    """A released LlamaGen t2i checkpoint with FLAN-T5-XL captions and the t2i VQ decoder."""

    family = "raster-ar"
    Config = LlamaGenT2ISettings
    gpt_model: ClassVar[str] = "GPT-XL"
    image_size: ClassVar[int] = 256
    gpt_spec: ClassVar[WeightSpec]
    caption_dim: ClassVar[int] = CAPTION_DIM
    vq_config: ClassVar[VQConfig] = VQConfig()
    #: checkpoint entries the network does not build (accepted, not loaded)
    unused_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self._files: list[tuple[Path, str]] | None = None
        self._loaded = False

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("gpt_weights", "vq_weights",
                                                                                       "t5_dir")}

    def gpt_config(self) -> GPTConfig:
        return t2i_config(GPT_CONFIGS[self.gpt_model], self.image_size)

    def build_network(self) -> LlamaGenT2I:
        return LlamaGenT2I(self.gpt_config(), self.caption_dim)

    def t5_specs(self) -> list[tuple[WeightSpec, str]]:
        folder = self.config.t5_dir
        return [(spec, str(Path(folder) / spec.filename.split("/", 1)[1]) if folder else "") for spec in FLAN_T5_XL]

    def weight_files(self) -> list[tuple[Path, str]]:
        """(path, sha256) of the GPT, the VQ and every T5 file; one MissingAssetError names all that are missing."""
        if self._files is None:
            wanted = [(self.gpt_spec, self.config.gpt_weights), (LLAMAGEN_VQ_T2I, self.config.vq_weights),
                      *self.t5_specs()]
            files = require_all([functools.partial(spec.locate, explicit or None) for spec, explicit in wanted],
                                f"method {self.name}")
            self._files = files
        return self._files

    def checkpoint_sha256(self) -> str | None:
        return combined_sha256(digest for _, digest in self.weight_files())

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.config.precision == "bf16" else torch.float32

    def load(self) -> None:
        files = self.weight_files()
        gpt_path, vq_path, t5_dir = files[0][0], files[1][0], files[2][0].parent
        model = self.build_network()
        load_into(model, read_state_dict(gpt_path), f"{self.name} ({gpt_path.name})", self.unused_prefixes)
        vq = VQDecoder(self.vq_config)
        load_into(vq, read_state_dict(vq_path), f"{self.name} tokenizer ({vq_path.name})", ENCODER_PREFIXES)
        self._model = model.to(self.device, self.dtype).eval()
        self._vq = vq.to(self.device).eval()
        self._t5 = T5CaptionEncoder(t5_dir, self.device, self.dtype)
        self._loaded = True

    def sampler(self) -> SamplerConfig:
        c = self.config
        return SamplerConfig(c.cfg_scale, c.cfg_interval, c.temperature, c.top_k, c.top_p)

    def check_prompts(self, requests: Sequence[Request]) -> list[str]:
        bad = [r.id for r in requests if not isinstance(r.condition.get("prompt"), str)]
        if bad:
            raise ArbenchError(f"{self.name} needs a text prompt in every request's condition; "
                               f"requests {bad[:5]} have none. Use a text-to-image task.")
        prompts = [r.condition["prompt"] for r in requests]
        for p in prompts:
            clean_prompt(p)
        return prompts

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Laid-out caption states (in the method's dtype) and their mask, loading the networks on first use."""
        if not self._loaded:
            self.load()
        states, mask = self._t5(prompts)
        caption, emb_mask = left_pad_layout(states, mask)
        return caption.to(self.dtype), emb_mask

    def decode_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        side = self._model.config.grid_size
        return to_uint8(self._vq(tokens.view(-1, side, side)))

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        caption, emb_mask = self.encode_prompts(self.check_prompts(requests))
        tokens = generate_t2i(self._model, caption, emb_mask, request_generators([r.seed for r in requests]),
                              self.sampler())
        return self.decode_tokens(tokens)


def _t2i(name: str, image_size: int, spec: WeightSpec, stage: str) -> type:
    cls = type(name.title().replace("-", ""), (LlamaGenT2IMethod,), {
        "description": f"LlamaGen-XL text-to-image (775M, {stage}), {image_size} px, FLAN-T5-XL captions, raster AR "
                       f"+ CFG 7.5, top-k 1000 (upstream sample_t2i.py defaults); weights {spec.filename}",
        "image_size": image_size, "gpt_spec": spec, "__module__": __name__})
    return register_method(name)(cls)


LLAMAGEN_T2I_METHODS = [
    _t2i("llamagen-t2i-xl-256", 256, T2I_XL_STAGE1_256, "stage 1"),
    _t2i("llamagen-t2i-xl-512", 512, T2I_XL_STAGE2_512, "stage 2"),
]
