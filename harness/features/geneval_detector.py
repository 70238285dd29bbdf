"""GenEval's detector: mmdetection 2.x Mask2Former (Swin-S, COCO instance segmentation) in plain PyTorch.

GenEval's official scorer needs mmcv-full 1.x built from source (its deformable attention is a compiled op);
this is the same network written without mmcv, with module names chosen so that the official checkpoint's state
dict (`mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth`) loads strictly, by its own
parameter names. Each piece follows the mmdet 2.x / mmcv 1.x module it replaces (named in its docstring),
including their quirks: Swin's PatchMerging uses `nn.Unfold` channel order, shifted windows attend to zero
padding, the pixel decoder uses no padding mask, and the deformable attention is the `grid_sample` path that
mmcv ships as the CPU reference of its CUDA kernel.

Preprocessing and post-processing are mmdet 2.x's test pipeline and `MaskFormerFusionHead.instance_postprocess`
(see `preprocess` and `instance_postprocess`).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from harness.errors import ArbenchError
from harness.metrics.geneval import Detection
from harness.weights import WeightSpec, register_weights

# mmdet names its files with the first 8 hex digits of their sha256; the full digest is not published.
CHECKPOINT_SHA256_PREFIX = "743b7d99"
MASK2FORMER_SWIN_S_COCO = register_weights(WeightSpec(
    name="mask2former-swin-s-coco-mmdet2",
    filename="mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth",
    url="https://download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
        "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth",
    sha256=None,
    license="Apache-2.0 (OpenMMLab mmdetection model zoo)",
    description=f"GenEval's detector; sha256 must start with {CHECKPOINT_SHA256_PREFIX} (checked on load)",
))
# Port v2 / preprocessing "pad32-128" (issue 16): the input is padded to /32 with 128 before normalising, as GenEval's
# config does; v1 padded normalised zeros, which changed every output of images whose resized size is not a
# multiple of 32 (square images, resized to 800 x 800, were unaffected).
DETECTOR_ID = f"mmdet2-mask2former-swin-s-coco:{CHECKPOINT_SHA256_PREFIX};arbench-torch-port-v2"
PREPROCESS_ID = "cv2-bilinear-short800-long1333;pad32-128;imagenet-mean-std;fp32"

#: COCO's 80 thing classes in detector index order, with GenEval's names (evaluation/object_names.txt).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


@dataclass(frozen=True)
class Mask2FormerConfig:
    """mmdet's `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py` (only what changes the network's output)."""

    embed_dims: int = 96
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: int = 4
    feat_channels: int = 256
    pixel_decoder_layers: int = 6
    pixel_decoder_ffn: int = 1024
    num_levels: int = 3
    num_points: int = 4
    attn_heads: int = 8
    decoder_layers: int = 9
    decoder_ffn: int = 2048
    num_queries: int = 100
    num_classes: int = 80
    max_per_image: int = 100
    # test pipeline
    scale: tuple[int, int] = (1333, 800)
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisor: int = 32
    pad_value: int = 128  # the config's `pad_cfg`; `Pad` runs before `Normalize`


# ---------------------------------------------------------------------------------------------------------------
# Swin Transformer backbone (mmdet/models/backbones/swin.py)


class FFN(nn.Module):
    """mmcv's FFN with two fcs: `layers.0.0` (fc + activation) then `layers.1`; residual added by the caller."""

    def __init__(self, dims: int, hidden: int, activation: nn.Module):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dims, hidden), activation), nn.Linear(hidden, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class WindowMSA(nn.Module):
    """Window attention with a relative position bias (mmdet `WindowMSA`)."""

    def __init__(self, dims: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.scale = (dims // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # mmdet's construction of the index (its checkpoints also store this buffer)
        coords = (torch.arange(0, (2 * window - 1) * window, 2 * window - 1)[:, None]
                  + torch.arange(0, window)[None, :]).reshape(1, -1)
        self.register_buffer("relative_position_index", (coords + coords.T).flip(1).contiguous())
        self.qkv = nn.Linear(dims, dims * 3)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = (attn.view(b // windows, windows, self.heads, n, n) + mask[None, :, None]).view(-1, self.heads, n, n)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


class ShiftWindowMSA(nn.Module):
    """(Shifted) window attention over a zero-padded feature map (mmdet `ShiftWindowMSA`)."""

    def __init__(self, dims: int, heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.w_msa = WindowMSA(dims, heads, window)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        return x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        h, w = hw
        ws, shift = self.window, self.shift
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = x.shape[1:3]
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            regions = torch.zeros((1, hp, wp, 1), device=x.device)
            spans = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
            for k, (hs, wsl) in enumerate((hs, wsl) for hs in spans for wsl in spans):
                regions[:, hs, wsl, :] = k
            ids = self.partition(regions).squeeze(-1)
            mask = (ids.unsqueeze(1) - ids.unsqueeze(2)) != 0
            mask = torch.zeros(mask.shape, device=x.device).masked_fill(mask, -100.0)
        out = self.w_msa(self.partition(x), mask)
        out = out.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :h, :w, :].reshape(b, h * w, c)


class SwinBlock(nn.Module):
    def __init__(self, dims: int, heads: int, window: int, shift: bool, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims)
        self.attn = ShiftWindowMSA(dims, heads, window, window // 2 if shift else 0)
        self.norm2 = nn.LayerNorm(dims)
        self.ffn = FFN(dims, dims * mlp_ratio, nn.GELU())

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.ffn(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 patch merging in `nn.Unfold` channel order (channel-major), as mmdet trains it."""

    def __init__(self, dims: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dims)
        self.reduction = nn.Linear(4 * dims, 2 * dims, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = F.pad(x.view(b, h, w, c).permute(0, 3, 1, 2), (0, w % 2, 0, h % 2))
        out_hw = (x.shape[2] // 2, x.shape[3] // 2)
        x = F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)
        return self.reduction(self.norm(x)), out_hw


class SwinStage(nn.Module):
    def __init__(self, dims: int, depth: int, heads: int, window: int, mlp_ratio: int, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dims, heads, window, j % 2 == 1, mlp_ratio) for j in range(depth))
        self.downsample = PatchMerging(dims) if downsample else None


class PatchEmbed(nn.Module):
    def __init__(self, dims: int, patch: int = 4):
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(3, dims, patch, patch)
        self.norm = nn.LayerNorm(dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch
        x = self.projection(F.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p)))  # mmdet's "corner" padding
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


class SwinTransformer(nn.Module):
    def __init__(self, cfg: Mask2FormerConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.embed_dims)
        dims = [cfg.embed_dims * 2 ** i for i in range(len(cfg.depths))]
        self.dims = dims
        self.stages = nn.ModuleList(
            SwinStage(d, depth, heads, cfg.window_size, cfg.mlp_ratio, i < len(dims) - 1)
            for i, (d, depth, heads) in enumerate(zip(dims, cfg.depths, cfg.num_heads)))
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, hw = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = block(x, hw)
            out = getattr(self, f"norm{i}")(x)
            outs.append(out.view(-1, *hw, self.dims[i]).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x, hw = stage.downsample(x, hw)
        return outs


# ---------------------------------------------------------------------------------------------------------------
# Pixel decoder (mmdet/models/plugins/msdeformattn_pixel_decoder.py, mmcv MultiScaleDeformableAttention)


def sine_position_encoding(b: int, h: int, w: int, num_feats: int, device) -> torch.Tensor:
    """mmcv `SinePositionalEncoding(normalize=True)` of an all-valid mask: (b, 2 * num_feats, h, w)."""
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)[None, :].expand(h, w)
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_feats)
    pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=3).view(h, w, -1)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=3).view(h, w, -1)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)[None].expand(b, -1, -1, -1)


def deformable_attention(value: torch.Tensor, shapes: Sequence[tuple[int, int]], locations: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
    """mmcv's `multi_scale_deformable_attn_pytorch`: bilinear `grid_sample` (zeros padding, align_corners=False).

    value (b, n_value, heads, d), locations (b, n_query, heads, levels, points, 2) in [0, 1],
    weights (b, n_query, heads, levels, points) -> (b, n_query, heads * d).
    """
    b, _, heads, d = value.shape
    _, nq, _, levels, points, _ = locations.shape
    grids = 2 * locations - 1
    sampled = []
    for level, part in enumerate(value.split([h * w for h, w in shapes], dim=1)):
        h, w = shapes[level]
        v = part.flatten(2).transpose(1, 2).reshape(b * heads, d, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = weights.transpose(1, 2).reshape(b * heads, 1, nq, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(b, heads * d, nq)
    return out.transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    def __init__(self, dims: int, heads: int, levels: int, points: int):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dims, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dims, heads * levels * points)
        self.value_proj = nn.Linear(dims, dims)
        self.output_proj = nn.Linear(dims, dims)

    def forward(self, query: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor,
                shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        b, n, c = query.shape
        value = self.value_proj(query).view(b, n, self.heads, -1)
        q = query + pos
        offsets = self.sampling_offsets(q).view(b, n, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(q).view(b, n, self.heads, self.levels * self.points).softmax(-1)
        weights = weights.view(b, n, self.heads, self.levels, self.points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return query + self.output_proj(deformable_attention(value, shapes, locations, weights))


class EncoderLayer(nn.Module):
    """mmcv BaseTransformerLayer with operation order (self_attn, norm, ffn, norm)."""

    def __init__(self, cfg: Mask2FormerConfig):
        super().__init__()
        c = cfg.feat_channels
        self.attentions = nn.ModuleList([MultiScaleDeformableAttention(c, cfg.attn_heads, cfg.num_levels,
                                                                       cfg.num_points)])
        self.ffns = nn.ModuleList([FFN(c, cfg.pixel_decoder_ffn, nn.ReLU())])
        self.norms = nn.ModuleList([nn.LayerNorm(c), nn.LayerNorm(c)])

    def forward(self, x, pos, reference, shapes):
        x = self.norms[0](self.attentions[0](x, pos, reference, shapes))
        return self.norms[1](x + self.ffns[0](x))


class ConvGN(nn.Module):
    """mmcv ConvModule with GroupNorm(32): `conv`, `gn`, optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool, relu: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.gn = nn.GroupNorm(32, cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gn(self.conv(x))
        return F.relu(x) if self.relu else x


class Encoder(nn.Module):
    def __init__(self, cfg: Mask2FormerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.pixel_decoder_layers))


class PixelDecoder(nn.Module):
    """mmdet `MSDeformAttnPixelDecoder`: deformable encoder on strides 32/16/8, FPN-style fusion at stride 4."""

    def __init__(self, cfg: Mask2FormerConfig, in_channels: Sequence[int]):
        super().__init__()
        c = cfg.feat_channels
        self.cfg = cfg
        self.input_convs = nn.ModuleList(ConvGN(in_channels[-1 - i], c, 1, bias=True, relu=False)
                                         for i in range(cfg.num_levels))
        self.encoder = Encoder(cfg)
        self.level_encoding = nn.Embedding(cfg.num_levels, c)
        self.lateral_convs = nn.ModuleList([ConvGN(in_channels[0], c, 1, bias=False, relu=False)])
        self.output_convs = nn.ModuleList([ConvGN(c, c, 3, bias=False, relu=True)])
        self.mask_feature = nn.Conv2d(c, c, 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b = feats[0].shape[0]
        inputs, positions, references, shapes = [], [], [], []
        for i in range(self.cfg.num_levels):
            feat = feats[len(feats) - 1 - i]
            h, w = feat.shape[-2:]
            pos = sine_position_encoding(b, h, w, self.cfg.feat_channels // 2, feat.device)
            inputs.append(self.input_convs[i](feat).flatten(2).transpose(1, 2))
            positions.append((pos + self.level_encoding.weight[i].view(1, -1, 1, 1)).flatten(2).transpose(1, 2))
            ys, xs = torch.meshgrid(torch.arange(h, device=feat.device, dtype=torch.float32),
                                    torch.arange(w, device=feat.device, dtype=torch.float32), indexing="ij")
            references.append(torch.stack(((xs.reshape(-1) + 0.5) / w, (ys.reshape(-1) + 0.5) / h), dim=-1))
            shapes.append((h, w))
        x, pos = torch.cat(inputs, 1), torch.cat(positions, 1)
        reference = torch.cat(references, 0)[None, :, None].expand(b, -1, self.cfg.num_levels, -1)
        for layer in self.encoder.layers:
            x = layer(x, pos, reference, shapes)
        outs = [part.transpose(1, 2).reshape(b, -1, h, w)
                for part, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes)]
        lateral = self.lateral_convs[0](feats[0])
        fused = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_feature(self.output_convs[0](fused)), outs


# ---------------------------------------------------------------------------------------------------------------
# Transformer decoder and head (mmdet/models/dense_heads/mask2former_head.py)


class MHA(nn.Module):
    """mmcv's MultiheadAttention wrapper: positions added to query and key, residual added."""

    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dims, heads, batch_first=True)

    def forward(self, query, key, value, query_pos, key_pos, mask=None):
        return query + self.attn(query + query_pos, key + key_pos, value, attn_mask=mask, need_weights=False)[0]


class DecoderLayer(nn.Module):
    """Operation order (cross_attn, norm, self_attn, norm, ffn, norm)."""

    def __init__(self, cfg: Mask2FormerConfig):
        super().__init__()
        c = cfg.feat_channels
        self.attentions = nn.ModuleList([MHA(c, cfg.attn_heads), MHA(c, cfg.attn_heads)])
        self.ffns = nn.ModuleList([FFN(c, cfg.decoder_ffn, nn.ReLU())])
        self.norms = nn.ModuleList([nn.LayerNorm(c) for _ in range(3)])

    def forward(self, query, query_pos, memory, memory_pos, mask):
        query = self.norms[0](self.attentions[0](query, memory, memory, query_pos, memory_pos, mask))
        query = self.norms[1](self.attentions[1](query, query, query, query_pos, query_pos))
        return self.norms[2](query + self.ffns[0](query))


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: Mask2FormerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.post_norm = nn.LayerNorm(cfg.feat_channels)


class Mask2FormerHead(nn.Module):
    def __init__(self, cfg: Mask2FormerConfig, in_channels: Sequence[int]):
        super().__init__()
        c = cfg.feat_channels
        self.cfg = cfg
        self.pixel_decoder = PixelDecoder(cfg, in_channels)
        self.transformer_decoder = TransformerDecoder(cfg)
        self.query_embed = nn.Embedding(cfg.num_queries, c)
        self.query_feat = nn.Embedding(cfg.num_queries, c)
        self.level_embed = nn.Embedding(cfg.num_levels, c)
        self.cls_embed = nn.Linear(c, cfg.num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(c, c), nn.ReLU(True), nn.Linear(c, c), nn.ReLU(True),
                                        nn.Linear(c, c))

    def predict(self, query, mask_features, attn_size):
        out = self.transformer_decoder.post_norm(query)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(out), mask_features)
        attn = F.interpolate(masks, attn_size, mode="bilinear", align_corners=False)
        attn = attn.flatten(2).unsqueeze(1).repeat(1, self.cfg.attn_heads, 1, 1).flatten(0, 1).sigmoid() < 0.5
        return self.cls_embed(out), masks, attn

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-layer class logits (b, q, classes + 1) and mask logits (b, q, h/4, w/4)."""
        b = feats[0].shape[0]
        mask_features, memories = self.pixel_decoder(feats)
        inputs, positions = [], []
        for i, mem in enumerate(memories):
            h, w = mem.shape[-2:]
            inputs.append(mem.flatten(2).transpose(1, 2) + self.level_embed.weight[i].view(1, 1, -1))
            positions.append(sine_position_encoding(b, h, w, self.cfg.feat_channels // 2, mem.device)
                             .flatten(2).transpose(1, 2))
        query = self.query_feat.weight.unsqueeze(0).repeat(b, 1, 1)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(b, 1, 1)
        levels = len(memories)
        cls, masks, attn = self.predict(query, mask_features, memories[0].shape[-2:])
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % levels
            attn[torch.where(attn.sum(-1) == attn.shape[-1])] = False  # a query that masks everything sees all
            query = layer(query, query_pos, inputs[level], positions[level], attn)
            cls, masks, attn = self.predict(query, mask_features, memories[(i + 1) % levels].shape[-2:])
        return cls, masks


class Mask2Former(nn.Module):
    """Backbone + head; `state_dict()` names equal the official mmdet 2.x checkpoint's."""

    def __init__(self, cfg: Mask2FormerConfig = Mask2FormerConfig()):
        super().__init__()
        self.cfg = cfg
        self.backbone = SwinTransformer(cfg)
        self.panoptic_head = Mask2FormerHead(cfg, self.backbone.dims)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.panoptic_head(self.backbone(images))


# ---------------------------------------------------------------------------------------------------------------
# Pre- and post-processing, loading


def preprocess(image: Image.Image, cfg: Mask2FormerConfig = Mask2FormerConfig()) -> tuple[torch.Tensor, tuple]:
    """mmdet 2.x test pipeline of GenEval's config: keep-ratio resize into (1333, 800) with cv2 bilinear on uint8,
    pad to /32 with the value 128, then normalise (the config pads *before* `Normalize`, so padded pixels become
    (128 - mean) / std, not 0).

    Returns the (1, 3, H_pad, W_pad) input and the resized (unpadded) size (h, w).
    """
    import cv2  # mmcv resizes with OpenCV; its rounding differs from PIL's and torch's

    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    long_side, short_side = max(cfg.scale), min(cfg.scale)
    factor = min(long_side / max(h, w), short_side / min(h, w))
    new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    d = cfg.size_divisor
    padded = np.pad(resized, ((0, -new_h % d), (0, -new_w % d), (0, 0)), constant_values=cfg.pad_value)
    x = (padded.astype(np.float32) - np.array(cfg.mean, np.float32)) * (1.0 / np.array(cfg.std, np.float64)).astype(
        np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None], (new_h, new_w)


def instance_postprocess(cls_logits: torch.Tensor, mask_logits: torch.Tensor, max_per_image: int = 100
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mmdet `MaskFormerFusionHead.instance_postprocess` for one image.

    cls_logits (q, classes + 1), mask_logits (q, H, W) at the original image size. Returns labels (k,),
    scores (k,) = class probability x mean mask probability inside the mask, boxes (k, 4) = tight box of the
    binary mask with exclusive right/bottom edges (zeros when empty), and binary masks (k, H, W).
    """
    num_classes = cls_logits.shape[-1] - 1
    scores = cls_logits.softmax(-1)[:, :-1]
    top_scores, top = scores.flatten().topk(max_per_image, sorted=False)
    labels = top % num_classes
    masks = mask_logits[top // num_classes]
    binary = masks > 0
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    cols, rows = binary.any(dim=1), binary.any(dim=2)  # (k, W), (k, H)
    x1, y1 = cols.float().argmax(dim=1), rows.float().argmax(dim=1)  # argmax returns the first maximum
    x2 = cols.shape[1] - cols.flip(1).float().argmax(dim=1)
    y2 = rows.shape[1] - rows.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float() * cols.any(dim=1, keepdim=True)
    return labels, top_scores * mask_scores, boxes, binary


def postprocess(cls_logits: torch.Tensor, mask_logits: torch.Tensor, input_hw: tuple[int, int],
                resized_hw: tuple[int, int], image_hw: tuple[int, int], max_per_image: int = 100
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mmdet 2.x's test-time chain for one image, `rescale=True`: `MaskFormerHead.simple_test` upsamples the final
    mask logits (1, q, h/4, w/4) to the padded input size, `MaskFormerFusionHead.simple_test` crops the padding,
    resizes to the original image (bilinear, align_corners=False) and runs `instance_postprocess`."""
    h, w = resized_hw
    masks = F.interpolate(mask_logits, size=input_hw, mode="bilinear", align_corners=False)[:, :, :h, :w]
    masks = F.interpolate(masks, size=image_hw, mode="bilinear", align_corners=False)
    return instance_postprocess(cls_logits[0], masks[0], max_per_image)


def to_detections(labels: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, binary: torch.Tensor
                  ) -> dict[str, list[Detection]]:
    """Per class, in the post-processing's order: what mmdet's `bbox2result` and mask lists hand GenEval."""
    detections: dict[str, list[Detection]] = {}
    for label, score, box, mask in zip(labels.tolist(), scores.tolist(), boxes.tolist(), binary.cpu().numpy()):
        detections.setdefault(COCO_CLASSES[label], []).append(Detection(tuple(box), score, mask))
    return detections


def numpy_safe_globals() -> list:
    """numpy scalars and arrays, which mmcv may leave in a checkpoint's `meta`: data, not code. Files pickled
    under numpy 1.x (mmdet 2.x's were) name them `numpy.core.multiarray.*`, numpy 2 `numpy._core.multiarray.*`."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.bool_, np.int32, np.int64, np.float32, np.float64, np.str_)]
    both_names = [(f, f"numpy{core}.multiarray.{f.__name__}") for f in (multiarray.scalar, multiarray._reconstruct)
                  for core in (".core", "._core")]
    return [*both_names, np.ndarray, np.dtype, *dtypes]


def load_checkpoint(path, model: Mask2Former) -> Mask2Former:
    """Load the official mmdet checkpoint strictly (safe loader: tensors, plain containers and numpy data only)."""
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ArbenchError(f"{path} holds objects other than tensors and plain data, which are not unpickled "
                           f"here ({str(exc).splitlines()[-1][:200]}); get the official file from "
                           f"{MASK2FORMER_SWIN_S_COCO.url}") from exc
    state_dict = checkpoint.get("state_dict", checkpoint)
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ArbenchError(
            f"{path} is not the mmdet 2.x Mask2Former Swin-S COCO checkpoint GenEval uses: "
            f"{len(result.missing_keys)} missing parameters (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}). The mmdet 3.x file "
            f"(..._8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth) has other names; get "
            f"{MASK2FORMER_SWIN_S_COCO.url}")
    return model


class GenEvalDetector:
    """Image -> {class name: detections} exactly as GenEval receives them from `inference_detector`."""

    def __init__(self, model: Mask2Former, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device

    @classmethod
    def from_pretrained(cls, path=None, device: str = "cpu") -> "GenEvalDetector":
        resolved = MASK2FORMER_SWIN_S_COCO.resolve(path)
        digest = MASK2FORMER_SWIN_S_COCO.verify(resolved)
        if not digest.startswith(CHECKPOINT_SHA256_PREFIX):
            raise ArbenchError(f"{resolved} has sha256 {digest}, but the official checkpoint's starts with "
                               f"{CHECKPOINT_SHA256_PREFIX}; fetch {MASK2FORMER_SWIN_S_COCO.url}")
        return cls(load_checkpoint(resolved, Mask2Former()), device)

    @torch.no_grad()
    def detect(self, image: Image.Image) -> dict[str, list[Detection]]:
        return self.detect_batch([image])[0]

    @torch.no_grad()
    def detect_batch(self, images: Sequence[Image.Image]) -> list[dict[str, list[Detection]]]:
        """`detect` for several images with one network pass per group of equal input size.

        GenEval (like mmdet's `inference_detector` on one image) never pads an image beyond its own /32 size, so
        only images whose padded inputs have the same shape are stacked: each image sees exactly the input it
        would see alone, and a batch differs from one-at-a-time only by float rounding in batched kernels
        (tested). Generators write images of one size, so a run's batches are full.
        """
        cfg = self.model.cfg
        prepared = [preprocess(image, cfg) for image in images]
        groups: dict[tuple, list[int]] = {}
        for i, (x, _) in enumerate(prepared):
            groups.setdefault(tuple(x.shape), []).append(i)
        results: list[dict[str, list[Detection]] | None] = [None] * len(images)
        for shape, members in groups.items():
            batch = torch.cat([prepared[i][0] for i in members]).to(self.device)
            cls_logits, mask_logits = self.model(batch)
            for row, i in enumerate(members):
                image = images[i]
                results[i] = to_detections(*(t.cpu() for t in postprocess(
                    cls_logits[row:row + 1], mask_logits[row:row + 1], tuple(shape[-2:]), prepared[i][1],
                    (image.height, image.width), cfg.max_per_image)))
        return results  # type: ignore[return-value]
