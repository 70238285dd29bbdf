"""The registered ImageFolder generator `imagefolder` (class-to-image, ImageNet 256). NON-COMMERCIAL weights.

Upstream adobe-research/ImageFolder @ 47d36b2: README "Inference code for ImageFolder" (`--product_quant 2
--num_latent_tokens 121 --v_patch_nums 1 1 2 3 3 4 5 6 8 11 --patch_size 11 --cfg 3.25 3.25 --top_k 750
--top_p 0.95`, no `--depth`, so `Args.depth` 16), and `inference.py`: `torch.autocast('cuda', float16)`,
`autoregressive_infer_cfg(..., more_smooth=False, joint_sample=args.joint_sample)` (default False), images
`clamp(255 x, 0, 255).to(uint8)` (truncation) of x in [0, 1]. `Args.cfg` is one float, so the README's second
3.25 is not a second value: cfg 3.25. The generator file (`imagenet-var-4096.pt`, README model zoo: "VAR,
362M, gFID 2.60") is a training checkpoint: `ckpt['trainer']['var_wo_ddp']` and `ckpt['trainer']['vae_local']`
(the tokenizer travels inside it), as inference.py reads it.

Licence: Adobe Research License (LICENSE.md), noncommercial research and teaching only; it covers the released
materials, code and weights. It is declared on the weight spec (`arbench weights list`), on the method
(`weights_license`, recorded in every run's provenance and shown on the board's run page) and in the reported
row's note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from baselines.imagegen.checkpoints import load_checkpoint_file, load_into
from baselines.imagegen.flowar_methods import precision_context
from baselines.imagegen.imagefolder import FoldedTokenizer, FoldedTokenizerConfig, generator_config
from baselines.imagegen.methods import ReleasedClassToImage
from baselines.imagegen.var import VAR, VARSampler, generate_var
from harness.errors import ArbenchError
from harness.registry import register_method
from harness.settings import NonNegativeFloat, TopK, TopP
from harness.weights import WeightSpec, register_weights

HF_IMAGEFOLDER = "https://huggingface.co/ang9867/imagefolder/resolve/main/"
IMAGEFOLDER_LICENSE = ("Adobe Research License: NON-COMMERCIAL research and teaching only "
                       "(adobe-research/ImageFolder LICENSE.md); trained on ImageNet")
# The publishers list no checksums; the signature records the digest of the file used (checkpoint_sha256).
IMAGEFOLDER_GENERATOR = register_weights(WeightSpec(
    "imagefolder-var-4096", "imagenet-var-4096.pt", HF_IMAGEFOLDER + "imagenet-var-4096.pt", None,
    IMAGEFOLDER_LICENSE,
    "ImageFolder generator (VAR depth 16 over 2 x 4096 folded tokens) with its tokenizer, one training checkpoint"))


def read_training_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(`var_wo_ddp`, `vae_local`) state dicts of upstream's training checkpoint, read with weights_only=True."""
    state = load_checkpoint_file(path, "an ImageFolder training checkpoint")
    trainer = state.get("trainer") if isinstance(state, dict) else None
    parts = [trainer.get(k) if isinstance(trainer, dict) else None for k in ("var_wo_ddp", "vae_local")]
    if not all(isinstance(p, dict) and p and all(isinstance(v, torch.Tensor) for v in p.values()) for p in parts):
        raise ArbenchError(f"{path} is not an ImageFolder training checkpoint: expected state dicts at "
                           "['trainer']['var_wo_ddp'] and ['trainer']['vae_local'] (as upstream's train.py saves "
                           "and inference.py reads them). Give imagenet-var-4096.pt (`arbench weights list`).")
    return parts[0], parts[1]


@dataclass
class ImageFolderSettings:
    """Upstream's inference.py with the README's flags."""

    cfg: NonNegativeFloat = 3.25
    cfg_schedule: Literal["linear"] = "linear"  # t = cfg * si / (K - 1); logits = (1 + t) cond - t uncond
    top_k: TopK = 750
    top_p: TopP = 0.95
    joint_sample: bool = False  # upstream's default: one draw per branch from its own filtered distribution
    more_smooth: bool = False
    precision: Literal["fp16-autocast", "fp32"] = "fp16-autocast"  # inference.py: autocast float16 on CUDA
    to_uint8: Literal["truncate", "round"] = "truncate"  # inference.py: clamp(255 x, 0, 255).to(uint8)
    imagefolder_weights: str = ""

    def __post_init__(self):
        if self.joint_sample:
            raise ValueError("joint_sample (one draw from the product of the branches' distributions) is not "
                             "upstream's default and is not implemented")
        if self.more_smooth:
            raise ValueError("more_smooth raises NotImplementedError upstream; it is not available")


@register_method("imagefolder")
class ImageFolder(ReleasedClassToImage):
    """The released ImageFolder generator: VAR depth 16 over folded (product-quantised, 2 branch) tokens."""

    description = ("ImageFolder (VAR d16 over 2-branch product-quantised tokens, 10 scales to 11x11, DINOv2 ViT-B "
                   "decoder), cfg 3.25 ramp, top-k 750, top-p 0.95 (README); README gFID 2.60; weights "
                   "imagenet-var-4096.pt, Adobe Research License: NON-COMMERCIAL")
    family = "next-scale"
    weights_license = IMAGEFOLDER_LICENSE
    Config = ImageFolderSettings
    depth = 16
    tokenizer_config = FoldedTokenizerConfig()

    def weight_files(self):
        return self.locate_all((IMAGEFOLDER_GENERATOR, self.config.imagefolder_weights))

    def load(self) -> None:
        precision_context(self.config.precision, self.device, self.name)  # refuse fp16 on CPU before reading
        ((path, _),) = self.weight_files()
        var_state, vae_state = read_training_checkpoint(path)
        with torch.device("meta"):  # nothing allocated or initialised: the file's tensors are assigned after the check
            model = VAR(generator_config(self.depth, self.num_classes, self.tokenizer_config))
            tokenizer = FoldedTokenizer(self.tokenizer_config)
        load_into(model, var_state, f"{self.name} generator ({path.name} trainer.var_wo_ddp)", assign=True)
        load_into(tokenizer, vae_state, f"{self.name} tokenizer ({path.name} trainer.vae_local)",
                  tokenizer.encoder_prefixes(), assign=True)
        self._model, self._tokenizer = model.to(self.device).eval(), tokenizer.to(self.device).eval()

    def images(self, labels, generators):
        sampler = VARSampler(self.config.cfg, self.config.top_k, self.config.top_p)
        with precision_context(self.config.precision, self.device, self.name):
            images, _ = generate_var(self._model, self._tokenizer, labels, generators, sampler)
        unit = (images.float() + 1) * 0.5 * 255
        unit = unit.clamp(0, 255) if self.config.to_uint8 == "truncate" else unit.round().clamp(0, 255)
        return unit.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
