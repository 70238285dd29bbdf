"""The evaluator networks of VBench's quality dimensions, with VBench's own frame preprocessing.

Faithful to Vchitect/VBench@45e79ec (`vbench/utils.py` `dino_transform`, `clip_transform`, `load_video`;
`subject_consistency.py`, `background_consistency.py`, `aesthetic_quality.py`):

- VBench reads an mp4 as a **float32** tensor ``[T, C, H, W]`` in 0..255 (`torch.Tensor(frames)`), so its resizes
  run on floats: nothing is rounded or clamped back to uint8 between resize and normalisation. The same here.
- **DINO ViT-B/16** (subject consistency): `Resize(224)` (shorter side to 224, bilinear, no antialias, **no
  crop**: a 16:9 video gives 224 x 398 inputs), /255, ImageNet mean/std; the network is
  facebookresearch/dino's `dino_vitb16` (CLS token after the last LayerNorm), whose positional embedding is
  interpolated for non-square inputs by DINO's own rule (bicubic, ``scale_factor=(h0 + 0.1) / 14``), which timm's
  `resample_abs_pos_embed` does not reproduce; the blocks are timm's (same parameter names as DINO's release).
- **CLIP ViT-B/32** (background consistency) and **ViT-L/14** (aesthetic quality): `Resize(224, bicubic, no
  antialias)`, `CenterCrop(224)`, /255, OpenAI mean/std; open_clip builds the network from OpenAI's state dict
  (QuickGELU, as OpenAI trained it). VBench loads CLIP with `clip.load`, which keeps float16 weights on CUDA
  and float32 on CPU; `load_clip` does the same.
- **LAION aesthetic predictor**: `nn.Linear(768, 1)` on the L2-normalised ViT-L/14 embedding (float32).
- **Appearance style** (`appearance_style.py`, a semantic dimension): CLIP ViT-B/32 on each frame as a **PIL
  image** (`clip_transform_Image`: PIL's bicubic resize, which always antialiases, `CenterCrop(224)`, `ToTensor`,
  OpenAI mean/std), against the style text tokenised by CLIP's tokenizer (open_clip's `tokenize` is OpenAI's
  `clip.tokenize`: same BPE, 77 tokens); the frame's score is OpenAI CLIP's `logits_per_text` / 100, i.e.
  ``exp(logit_scale) * cos(image, text) / 100`` computed in the model's dtype, as OpenAI's `CLIP.forward` does.

Weights are resolved by name from the cache (`arbench weights fetch <name>`); nothing is downloaded at run time.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.features.clip_color import CLIP_VIT_L14_OPENAI
from harness.weights import WeightSpec, register_weights

DINO_VITB16 = register_weights(WeightSpec(
    name="dino-vitb16",
    filename="dino_vitbase16_pretrain.pth",
    url="https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
    sha256=None,  # not published by facebookresearch/dino; the file's digest goes into the signature
    license="Apache-2.0 (facebookresearch/dino)",
    description="DINO ViT-B/16 backbone (plain state dict); VBench subject consistency",
))
CLIP_VIT_B32_OPENAI = register_weights(WeightSpec(
    name="clip-vit-b32-openai",
    filename="ViT-B-32.pt",
    url="https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    license="MIT (OpenAI CLIP)",
    description="OpenAI CLIP ViT-B/32 (TorchScript); VBench background consistency, controlar-multigen CLIP score",
))
LAION_AESTHETIC_VIT_L14 = register_weights(WeightSpec(
    name="laion-aesthetic-vit-l14",
    filename="sa_0_4_vit_l_14_linear.pth",
    url="https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/6d122adad522ab246644d9dc1c6d7a3810ee255f/"
        "sa_0_4_vit_l_14_linear.pth",
    sha256="2cd4e60f4f24ae3bcd57b847b13c1f3ba27edc28cc1a7f9ce74ee9f421243cba",
    license="MIT (LAION-AI/aesthetic-predictor)",
    description="LAION aesthetic predictor v1 (linear head on CLIP ViT-L/14); VBench aesthetic quality",
))

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
DINO_PREPROCESS = "float-resize-short224-bilinear-noantialias-nocrop+imagenet-norm"
CLIP_PREPROCESS = "float-resize-short224-bicubic-noantialias+center-crop224+openai-norm"
CLIP_IMAGE_PREPROCESS = "pil-resize-short224-bicubic+center-crop224+to-tensor+openai-norm"


def video_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` in 0..255 (VBench's `load_video`)."""
    return torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()


def dino_transform(frames: torch.Tensor) -> torch.Tensor:
    """VBench's `dino_transform(224)` on a float ``[T, 3, H, W]`` 0..255 tensor."""
    from torchvision.transforms import functional as TF

    x = TF.resize(frames, 224, antialias=False).float().div(255.0)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def clip_transform(frames: torch.Tensor) -> torch.Tensor:
    """VBench's `clip_transform(224)` on a float ``[T, 3, H, W]`` 0..255 tensor."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = TF.resize(frames, 224, interpolation=InterpolationMode.BICUBIC, antialias=False)
    x = TF.center_crop(x, 224).float().div(255.0)
    return TF.normalize(x, OPENAI_MEAN, OPENAI_STD)


def clip_transform_image(frames: np.ndarray) -> torch.Tensor:
    """VBench's `clip_transform_Image(224)` applied to each frame of a uint8 ``[T, H, W, 3]`` video as a PIL image
    (`appearance_style.py`); returns float32 ``[T, 3, 224, 224]``."""
    from PIL import Image
    from torchvision import transforms as T

    # VBench passes antialias=False, which torchvision ignores for a PIL image (PIL always antialiases); True says so
    transform = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                           T.CenterCrop(224), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    return torch.stack([transform(Image.fromarray(frame)) for frame in np.asarray(frames)])


class DinoViT(nn.Module):
    """DINO's ViT (CLS output after the final LayerNorm) on timm's blocks, with DINO's positional-embedding
    interpolation. State-dict names are those of facebookresearch/dino's release (and of timm's ViT)."""

    def __init__(self, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, patch_size: int = 16,
                 img_size: int = 224):
        super().__init__()
        import timm

        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=4.0, qkv_bias=True, num_classes=0, global_pool="token", class_token=True)
        self.patch_size = patch_size

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.vit.load_state_dict(state_dict, strict=strict, assign=assign)

    def state_dict(self, *args, **kwargs):
        return self.vit.state_dict(*args, **kwargs)

    def interpolate_pos_encoding(self, num_patches: int, h: int, w: int) -> torch.Tensor:
        """DINO's `interpolate_pos_encoding` (written out here: timm's resampling takes a target size, DINO's
        takes a scale factor with +0.1, and the two differ)."""
        pos = self.vit.pos_embed
        n = pos.shape[1] - 1
        if num_patches == n and w == h:
            return pos
        dim = pos.shape[-1]
        h0, w0 = h // self.patch_size + 0.1, w // self.patch_size + 0.1
        side = int(math.sqrt(n))
        patch = F.interpolate(pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
                              scale_factor=(h0 / math.sqrt(n), w0 / math.sqrt(n)), mode="bicubic")
        patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], patch), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        tokens = self.vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat((self.vit.cls_token.expand(len(x), -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(tokens.shape[1] - 1, h, w)
        tokens = self.vit.norm(self.vit.blocks(tokens))
        return tokens[:, 0]


def load_dino(path: str | None = None, device: str = "cpu") -> DinoViT:
    """DINO ViT-B/16 from the cache (or `path`): a plain state dict, read with `weights_only=True`."""
    state = torch.load(DINO_VITB16.resolve(path), map_location="cpu", weights_only=True)
    model = DinoViT()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def clip_from_openai_state_dict(state_dict: dict, device: str = "cpu", half: bool | None = None) -> nn.Module:
    """open_clip's model from OpenAI parameter names, in `clip.load`'s precision: float32 off CUDA; on CUDA
    (or `half=True`) OpenAI's `convert_weights` float16 (convolutions, linear and attention weights, the two
    projections), with LayerNorms, embeddings and `logit_scale` float32 and LayerNorms computed in float32, which
    open_clip builds for `cast_dtype=float16` (a plain `.half()` would also cast those)."""
    import open_clip

    half = str(device).startswith("cuda") if half is None else half
    model = open_clip.model.build_model_from_openai_state_dict(
        dict(state_dict), quick_gelu=True, cast_dtype=torch.float16 if half else None)
    return (model if half else model.float()).eval().to(device)


def load_clip(spec: WeightSpec, path: str | None = None, device: str = "cpu") -> nn.Module:
    """An OpenAI CLIP release (TorchScript archive, read with `torch.jit.load`; only its state dict is used)."""
    state = torch.jit.load(str(spec.resolve(path)), map_location="cpu").state_dict()
    return clip_from_openai_state_dict(state, device)


def load_aesthetic_head(path: str | None = None, device: str = "cpu") -> nn.Linear:
    """The LAION aesthetic predictor's linear head (a plain state dict, `weights_only=True`)."""
    head = nn.Linear(768, 1)
    head.load_state_dict(torch.load(LAION_AESTHETIC_VIT_L14.resolve(path), map_location="cpu", weights_only=True))
    return head.eval().to(device)


@torch.no_grad()
def dino_features(model: nn.Module, frames: np.ndarray, device: str = "cpu", batch_size: int = 16) -> torch.Tensor:
    """``[T, D]`` DINO CLS features of every frame of a uint8 ``[T, H, W, 3]`` video (VBench feeds frames one at a
    time; batching changes nothing but rounding)."""
    x = dino_transform(video_tensor(frames))
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def clip_image_features(model: nn.Module, frames: np.ndarray, device: str = "cpu",
                        batch_size: int = 32) -> torch.Tensor:
    """``[T, D]`` CLIP image embeddings (unnormalised, float32) of every frame, in the model's dtype."""
    x = clip_transform(video_tensor(frames))
    dtype = next(model.parameters()).dtype
    return torch.cat([model.encode_image(x[i:i + batch_size].to(device, dtype)).float().cpu()
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def aesthetic_score(clip_model: nn.Module, head: nn.Linear, frames: np.ndarray, device: str = "cpu") -> float:
    """VBench's per-video aesthetic quality: mean over frames of head(normalised CLIP ViT-L/14 embedding) / 10."""
    features = F.normalize(clip_image_features(clip_model, frames, device), dim=-1, p=2)
    scores = head(features.to(device)).squeeze(dim=-1).float().cpu()
    return float(torch.mean(scores / 10))


@torch.no_grad()
def clip_text_features(model: nn.Module, text: str, device: str = "cpu") -> torch.Tensor:
    """``[1, D]`` CLIP text embedding of `text` (OpenAI's tokenisation, 77 tokens), in the model's dtype."""
    import open_clip

    return model.encode_text(open_clip.tokenize([text]).to(device))


@torch.no_grad()
def appearance_style_scores(model: nn.Module, frames: np.ndarray, style: str, device: str = "cpu",
                            batch_size: int = 32) -> list[float]:
    """VBench's per-frame appearance-style scores of one video: OpenAI CLIP's ``logits_per_text / 100`` of every
    frame against `style` (VBench feeds one frame at a time; batching changes nothing but rounding)."""
    dtype = next(model.parameters()).dtype
    text = clip_text_features(model, style, device)
    text = text / text.norm(dim=1, keepdim=True)  # OpenAI's `CLIP.forward`: x / x.norm(), in the model's dtype
    x = clip_transform_image(frames)
    scores = []
    for i in range(0, len(x), batch_size):
        image = model.encode_image(x[i:i + batch_size].to(device, dtype))
        image = image / image.norm(dim=1, keepdim=True)
        # OpenAI keeps `logit_scale` float32 when it casts CLIP to float16 (`convert_weights`); a 0-dim float32
        # tensor times float16 features stays float16, as in its `forward`
        logits_per_text = model.logit_scale.float().exp() * image @ text.t()
        scores += [float(v) / 100 for v in logits_per_text[:, 0].float().cpu()]
    return scores


FeatureFn = Callable[[np.ndarray], torch.Tensor]
