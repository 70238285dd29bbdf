"""ImageFolder (Li et al. 2024, "Autoregressive Image Generation with Folded Tokens"): VAR's next-scale generator
over a product-quantised tokenizer, the project's own implementation.

Read from adobe-research/ImageFolder @ 47d36b2 (Adobe Research License, non-commercial): `models/var.py`,
`models/basic_var.py`, `tokenizer/tokenizer_image/msvq_model.py`, `quant.py`, `dino_enc/dinov2.py`,
`dino_enc/vision_transformer.py`, `dino_enc/to_pixel.py`.

- **Generator**: exactly VAR's transformer (`basic_var.py` is VAR's up to xformers padding), built here with
  `baselines.imagegen.var.VAR`: depth 16 (width 1024, 16 heads), 10 scales (1, 1, 2, 3, 3, 4, 5, 6, 8, 11; 286
  tokens), one head over both branches' vocabularies (2 x 4096 logits, split in branch order), input
  `word_embed` over both branches' channels (2 x 32).
- **Tokenizer, decoding half** (`FoldedTokenizer`): two branches ("semantic" and "detail"), each a VAR
  multi-scale quantizer (codebook 4096 x 32, 4 shared residual convolutions phi; the same function as
  `baselines.imagegen.var.MultiScaleQuantizer`) on its own 32 channels of the 11 x 11 feature map; the
  branches are concatenated, projected by a 1 x 1 `post_quant_conv` to 768 channels and decoded by a DINOv2
  ViT-B (12 blocks with LayerScale) that reads the 121 latent tokens beside 256 mask tokens and maps the mask
  tokens to 16 x 16 pixel patches (`FoldedDecoder`).
- **Sampling** (`baselines.imagegen.var.generate_var` with this tokenizer): VAR's linear CFG ramp, then top-k /
  top-p and one draw per branch from its half of the logits (upstream's `joint_sample=False`).

Upstream's released code does not run its own inference path: `VQModel` lacks the `Cvae`, `vocab_size`,
`get_next_autoregressive_input` and `fhat_to_img` that `models/var.py` calls. What those must do is fixed by the
rest of upstream's code (tests/golden/make_imagefolder.py spells it out): each branch's quantizer works on its
own channel slice, in the order var.py splits them, and `fhat_to_img` is `img_to_reconstructed_img`'s tail.

Parameter names are upstream's (`trainer.var_wo_ddp` and `trainer.vae_local` of the released training
checkpoint): `quantizes.{b}.embedding.weight`, `quantizes.{b}.quant_resi.qresi_ls.{k}.weight`,
`post_quant_conv.weight`, `decoder.model.blocks.{i}.attn.qkv.weight`, `decoder.model.blocks.{i}.ls1.gamma`,
`decoder.mask_token`, `decoder.lvl_embed.weight`, `decoder.to_pixel.model.weight`, ...
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.var import MultiScaleQuantizer, VARConfig, VQVAEConfig
from baselines.imagegen.vit_layers import Attention, Mlp

PATCH_NUMS = (1, 1, 2, 3, 3, 4, 5, 6, 8, 11)
#: Entries of the released `vae_local` that only encoding and training use (ViT-B encoder, its 1x1 projection,
#: the frozen DINOv2 teacher of the semantic loss, the quantizers' usage statistics).
ENCODER_PREFIXES = ("encoder.", "quant_conv.", "semantic_model.", "sem_linear.")


@dataclass(frozen=True)
class FoldedTokenizerConfig:
    """The released tokenizer (`imagenet-4096`): README flags `--product_quant 2 --num_latent_tokens 121
    --v_patch_nums 1 1 2 3 3 4 5 6 8 11 --decoder_model vit_base_patch14_dinov2.lvd142m`, ModelArgs defaults
    (codebook 4096 x 32, share_quant_resi 4, abs_pos_embed), VQModel's `img_size 256, patch_size 16`."""

    codebook_size: int = 4096
    codebook_dim: int = 32
    branches: int = 2
    patch_nums: tuple[int, ...] = PATCH_NUMS
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    img_size: int = 256
    patch_size: int = 16
    norm_eps: float = 1e-6

    def __post_init__(self):
        if (self.img_size // self.patch_size) != self.patch_size:
            # upstream's level index has patch_size**2 + 1 image entries: it fits only when img = patch**2
            raise ValueError(f"upstream's decoder needs img_size = patch_size**2, got {self.img_size} and "
                             f"{self.patch_size}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def latent_side(self) -> int:
        return self.patch_nums[-1]

    def quantizer(self) -> VQVAEConfig:
        return VQVAEConfig(vocab_size=self.codebook_size, z_channels=self.codebook_dim, quant_resi=self.quant_resi,
                           share_quant_resi=self.share_quant_resi, patch_nums=self.patch_nums)


def generator_config(depth: int = 16, num_classes: int = 1000,
                     tokenizer: FoldedTokenizerConfig = FoldedTokenizerConfig()) -> VARConfig:
    """ImageFolder's VAR: upstream `build_vae_var(depth=d)` with V = branches x codebook and Cvae = branches x dim."""
    return VARConfig(depth=depth, num_classes=num_classes, patch_nums=tokenizer.patch_nums,
                     vocab_size=tokenizer.codebook_size * tokenizer.branches,
                     z_channels=tokenizer.codebook_dim * tokenizer.branches)


def resample_pos_embed(pos_embed: torch.Tensor, side: int) -> torch.Tensor:
    """timm 1.0.9's `resample_abs_pos_embed` with one prefix token: the square grid part resized by antialiased
    bicubic interpolation in float32 (written out: one call, and timm is not a runtime dependency here)."""
    prefix, grid = pos_embed[:, :1], pos_embed[:, 1:]
    old = int(grid.shape[1] ** 0.5)
    if old == side:
        return pos_embed
    grid = grid.float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side, side), mode="bicubic", antialias=True)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, side * side, -1).to(pos_embed.dtype)], dim=1)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ViTBlock(nn.Module):
    """timm's pre-norm ViT block with DINOv2's LayerScale (`ls1`, `ls2`)."""

    def __init__(self, config: FoldedTokenizerConfig):
        super().__init__()
        d = config.width
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=config.norm_eps), nn.LayerNorm(d, eps=config.norm_eps)
        self.attn, self.ls1 = Attention(d, config.heads), LayerScale(d)
        self.mlp, self.ls2 = Mlp(d, int(d * config.mlp_ratio)), LayerScale(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTTrunk(nn.Module):
    """What the decoder uses of timm's VisionTransformer (its patch projection is deleted upstream)."""

    def __init__(self, config: FoldedTokenizerConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid ** 2, config.width))
        self.blocks = nn.Sequential(*(ViTBlock(config) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(config.width, eps=config.norm_eps)


class FoldedDecoder(nn.Module):
    """Upstream `DINOv2Decoder` (to_pixel 'linear', abs_pos_embed, no RoPE, no latent conditioning MLP).

    Sequence: [cls, 256 mask tokens] + the ViT's position table, then [cls, 121 latents] + that table resampled
    to 11 x 11; a level embedding (0 for the first part, 1 for the second) is added; after the blocks and the
    final norm, the mask tokens become 16 x 16 x 3 patches.
    """

    def __init__(self, config: FoldedTokenizerConfig):
        super().__init__()
        self.config = config
        self.model = ViTTrunk(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.lvl_embed = nn.Embedding(2, config.width)
        level = torch.cat([torch.zeros(config.patch_size ** 2 + 1), torch.ones(config.latent_side ** 2 + 1)])
        self.register_buffer("lvl1LC", level.long().view(1, -1))
        self.to_pixel = nn.Module()
        self.to_pixel.model = nn.Linear(config.width, 3 * config.patch_size ** 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent tokens (B, 121, width) -> image (B, 3, 256, 256), unclamped."""
        c, b = self.config, z.shape[0]
        cls = self.model.cls_token.expand(b, -1, -1)
        x = torch.cat([cls, self.mask_token.expand(b, c.grid ** 2, -1)], dim=1) + self.model.pos_embed
        z = torch.cat([cls, z], dim=1) + resample_pos_embed(self.model.pos_embed, c.latent_side)
        x = torch.cat([x, z], dim=1) + self.lvl_embed(self.lvl1LC)
        x = self.model.norm(self.model.blocks(x))[:, 1:1 + c.grid ** 2]
        p = c.patch_size
        patches = self.to_pixel.model(x).reshape(b, c.grid, c.grid, p, p, 3)
        return torch.einsum("nhwpqc->nchpwq", patches).reshape(b, 3, c.grid * p, c.grid * p)


class FoldedTokenizer(nn.Module):
    """The decoding half of ImageFolder's tokenizer: per-branch multi-scale codes -> f_hat -> image in [-1, 1]."""

    def __init__(self, config: FoldedTokenizerConfig = FoldedTokenizerConfig()):
        super().__init__()
        self.config = config
        self.branches = config.branches
        self.quantizes = nn.ModuleList(MultiScaleQuantizer(config.quantizer()) for _ in range(config.branches))
        self.post_quant_conv = nn.Conv2d(config.codebook_dim * config.branches, config.width, 1)
        self.decoder = FoldedDecoder(config)

    def add_scale(self, si: int, f_hat: torch.Tensor, codes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale si's codes of every branch (list of (B, pn*pn)) to f_hat (B, branches x dim, 11, 11); returns
        f_hat and the next scale's input map (None after the last scale)."""
        steps = [q.add_scale(si, f, c) for q, f, c in zip(self.quantizes, f_hat.chunk(self.branches, dim=1), codes)]
        f_hat = torch.cat([f for f, _ in steps], dim=1)
        return f_hat, None if steps[0][1] is None else torch.cat([n for _, n in steps], dim=1)

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat).flatten(2).transpose(1, 2)).clamp(-1, 1)

    def encoder_prefixes(self) -> tuple[str, ...]:
        """Checkpoint entries this decoding half does not read (ENCODER_PREFIXES and the usage statistics)."""
        return ENCODER_PREFIXES + tuple(f"quantizes.{b}.ema_vocab_hit_SV" for b in range(self.branches))
