"""The registered Orthus text-to-image generators (zhijie-group/Orthus, Kou et al. 2024), driven by any text-to-image
task (GenEval): `orthus-7b-base` and `orthus-7b-instruct` (the same code path; upstream's `t2i_generation.py` loads
the instruct model). Paper: GenEval 0.58 (Orthus 7B).

Pipeline as upstream's `inference/t2i_generation.py` (zhijie-group/Orthus@609d968) with the model of
`baselines.imagegen.orthus`: each prompt is paired with the unconditional prompt "Generate an image.", tokenised by
the snapshot's tokenizer (delegated to transformers' `AutoTokenizer`) with the sep token appended as upstream's
processor does, `<boi>` appended; 1024 continuous image features are generated one by one, each by 100 DDIM steps of
the diffusion head with classifier-free guidance 5.0 on the head; they are decoded by Chameleon's VQ decoder to
512 x 512 and mapped to uint8 with the snapshot's `preprocessor_config.json` (upstream's `postprocess`). bfloat16
as upstream's script (the head under fp16 autocast on CUDA, as upstream).

Weights: the released Hugging Face snapshot (`SJTU-Deng-Lab/Orthus-7B-base` / `-instruct`), a folder
`$ARBENCH_HOME/weights/<method>/` (or the `model_dir` setting) with upstream's layout. The fixed files are WeightSpecs;
the safetensors shards are the ones `model.safetensors.index.json` names. Every missing file is named at once (the
shards once the index is there). Nothing is unpickled (safetensors and JSON only). The publisher shows no sha256 this
project could record: each file's digest is recorded on first use (`arbench weights`).

Each request draws its head noise from its own generator seeded by `Request.seed` (the project's convention;
upstream draws from torch's global generator after `set_seed(12)`), so an image does not depend on its batch.
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
from baselines.imagegen.orthus import (
    DDIM_CONFIG,
    HEAD_DEPTH,
    HEAD_WIDTH,
    Orthus,
    generate_latents,
    layout,
    prompt_rows,
    to_uint8,
)
from baselines.imagegen.sampling import request_generators
from harness.api import Request
from harness.errors import ArbenchError
from harness.protocols.text_to_image import TextToImage
from harness.registry import register_method
from harness.settings import Annotated, Field, NonNegativeFloat
from harness.weights import WeightSpec, register_weights, require_all

ORTHUS_LICENSE = ("Meta Chameleon licence (Orthus weights are Chameleon-7B derived; "
                  "https://ai.meta.com/resources/models-and-libraries/chameleon-license). Upstream's README: "
                  "\"commercial usage is permitted under the terms outlined in the license\"; Meta released Chameleon "
                  "under a research licence: read its terms before any non-research use")
HF = "https://huggingface.co/SJTU-Deng-Lab/{model}/resolve/main/"
#: The snapshot's fixed files ARBench reads (config.json, processor_config.json, special_tokens_map.json and
#: tokenizer.json are on the model pages; the index and preprocessor config are what transformers' sharded
#: checkpoint and upstream's `OrthusProcessor.from_pretrained` read).
ORTHUS_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "preprocessor_config.json")
INDEX = ORTHUS_FILES.index("model.safetensors.index.json")


def orthus_weight_specs(method: str, model: str) -> tuple[WeightSpec, ...]:
    slug = lambda f: f.replace(".", "-").replace("_", "-").lower()  # noqa: E731
    return tuple(register_weights(WeightSpec(
        f"{method}-{slug(name)}", f"{method}/{name}", HF.format(model=model) + name, None, ORTHUS_LICENSE,
        f"Orthus {model}: {name}")) for name in ORTHUS_FILES)


@dataclass
class OrthusSettings:
    """Upstream's `inference/t2i_generation.py` and the continuous-mode forward of `modeling_orthus.py`."""

    cfg_scale: NonNegativeFloat = 5.0
    num_diffusion_steps: Annotated[int, Field(ge=1, le=1000)] = 100  # sample_scheduler.set_timesteps(100)
    precision: Literal["bf16", "fp32"] = "bf16"  # upstream: torch_dtype=torch.bfloat16
    batch_size: Annotated[int, Field(ge=1, le=64)] = 4  # requests per loop (2 rows each); upstream runs one
    model_dir: str = ""  # a folder with the snapshot; default $ARBENCH_HOME/weights/<method name>


class OrthusMethod(TextToImage):
    """A released Orthus snapshot: Chameleon-7B over text tokens and continuous image features, diffusion head."""

    family = "raster-ar"  # next-token AR over raster-ordered continuous features
    Config = OrthusSettings
    weights_license = ORTHUS_LICENSE
    specs: ClassVar[tuple[WeightSpec, ...]] = ()
    #: `OrthusForConditionalGeneration.__init__` defaults (the released head; not in config.json)
    head_width: ClassVar[int] = HEAD_WIDTH  # config.json omits defaults (embed_dim 256 too)
    head_depth: ClassVar[int] = HEAD_DEPTH

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self._files: list[tuple[Path, str]] | None = None
        self._loaded = False

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("model_dir", "batch_size")}

    def _spec_path(self, spec: WeightSpec) -> tuple[Path, str]:
        folder = self.config.model_dir
        return spec.locate(Path(folder) / spec.filename.split("/", 1)[1]) if folder else spec.locate()

    def weight_files(self) -> list[tuple[Path, str]]:
        """(path, sha256) of the fixed files then the shards; one MissingAssetError names all that are missing."""
        if self._files is None:
            fixed = require_all([lambda s=spec: self._spec_path(s) for spec in self.specs], f"method {self.name}")
            root = fixed[INDEX][0].parent
            index = json.loads(fixed[INDEX][0].read_text())
            shards = sorted(set((index.get("weight_map") or {}).values()))
            if not shards or any(not s.endswith(".safetensors") or "/" in s for s in shards):
                raise ArbenchError(f"{fixed[INDEX][0]}: its weight_map names {shards[:3]}; expected safetensors "
                                   "shards beside it (ARBench never unpickles .bin checkpoints).")
            spec = self.specs[INDEX]
            shard_specs = [dataclasses.replace(spec, name=f"{self.name}-{s}", filename=f"{self.name}/{s}",
                                               url=spec.url.rsplit("/", 1)[0] + "/" + s) for s in shards]
            self._files = fixed + require_all([lambda s=s: s.locate(root / s.filename.split("/", 1)[1])
                                               for s in shard_specs], f"method {self.name} (shards in the index)")
        return self._files

    def checkpoint_sha256(self) -> str | None:
        return combined_sha256(digest for _, digest in self.weight_files())

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.config.precision == "bf16" else torch.float32

    def load(self) -> None:
        from diffusers import DDIMScheduler
        from transformers import AutoTokenizer, ChameleonConfig

        files = self.weight_files()
        root = files[0][0].parent
        raw = json.loads(files[0][0].read_text())
        if raw.get("model_type") != "chameleon" or raw.get("vq_config", {}).get("embed_dim", 256) != 256:
            raise ArbenchError(f"{files[0][0]}: not an Orthus (Chameleon, 256-d VQ features) config.json; put the "
                               f"{self.name} snapshot there.")
        state = {}
        for path, _ in files[len(self.specs):]:
            state.update(read_state_dict(path, what=f"{self.name} shard {path.name}"))
        with torch.device("meta"):
            model = Orthus(ChameleonConfig(**raw), raw["vq_config"], self.head_width, self.head_depth)
        load_into(model, Orthus.split_state(state), f"{self.name} ({root})", assign=True)
        model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)  # its buffers are not saved
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise ArbenchError(f"{self.name}: {left[:3]} were not in the checkpoint; the snapshot is incomplete.")
        self._model = model.to(self.device, self.dtype).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(str(root))
        if self._tokenizer.sep_token is None:
            raise ArbenchError(f"{root}: the tokenizer defines no sep_token; upstream's processor appends it to "
                               "every prompt. Use the released tokenizer files.")
        self._preprocessor = json.loads(files[ORTHUS_FILES.index("preprocessor_config.json")][0].read_text())
        self._scheduler = DDIMScheduler(**DDIM_CONFIG)
        self._loaded = True

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        prompts = self.check_prompts(requests)
        if not self._loaded:
            self.load()
        c, out = self.config, []
        for start in range(0, len(requests), c.batch_size):
            part = requests[start:start + c.batch_size]
            gens = request_generators([r.seed for r in part])
            rows = prompt_rows(self._tokenizer, prompts[start:start + c.batch_size])
            pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 1
            noises = lambda k, g=gens: torch.cat([torch.randn(1, 256, generator=x) for x in g])  # noqa: E731
            latents = generate_latents(self._model, layout(rows, pad), noises, self._scheduler, c.cfg_scale,
                                       c.num_diffusion_steps)
            out.append(to_uint8(self._model.decode(latents.to(self.dtype)), self._preprocessor))
        return np.concatenate(out)


def _orthus(name: str, model: str, what: str) -> type:
    cls = type(name.replace("-", "_").upper(), (OrthusMethod,), {
        "description": f"Orthus-7B {what} text-to-image (Chameleon-7B backbone, continuous features, diffusion head): "
                       "1024 features x 100 DDIM steps, CFG 5 on the head (upstream t2i script; paper GenEval 0.58)",
        "specs": orthus_weight_specs(name, model), "__module__": __name__})
    return register_method(name)(cls)


ORTHUS_METHODS = [_orthus("orthus-7b-base", "Orthus-7B-base", "base"),
                  _orthus("orthus-7b-instruct", "Orthus-7B-instruct", "instruct")]
