"""CLIP score of a generated image against its caption, as ControlAR's `evaluations/t2i/evaluation.py` computes it
(hustvl/ControlAR@87e32e9, taken from GigaGAN's evaluation; `compute_clip_score` with its default
`clip_model4eval="ViT-B/32"`, OpenAI CLIP):

- the image is centre-cropped to its short side and resized to `eval_res` (256) with PIL's Lanczos filter, then
  taken through `ToTensor` / `Normalize(0.5, 0.5)` and back to uint8 by `((x + 1) * 127.5).clamp(0, 255)`
  (a truncating cast, as upstream's `tensor2pil`), then CLIP's own preprocessing (bicubic 224, centre crop,
  OpenAI mean/std);
- the caption is tokenised by CLIP's tokenizer (truncated to 77 tokens) and "A photo depicts " is spliced in
  after the start token (Hessel et al., CLIPScore), cut again to 77 tokens with the end token forced last;
- the score is the cosine similarity of the two embeddings, unscaled (no x 100, no clipping at 0; CLIPScore's
  `w = 2.5` is not applied either), averaged over images.

The network is OpenAI's ViT-B/32 TorchScript release (its URL carries its sha256; the file VBench uses too), loaded
with `torch.jit.load` (TorchScript, not a pickle of arbitrary objects) for its state dict only and rebuilt by open_clip
as a QuickGELU model by `harness.features.vbench_nets`: float16 on CUDA and float32 elsewhere, as `clip.load` (which
upstream calls with device "cuda") leaves it; the images go in and the cosines come out in that dtype, as upstream.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.features.clip_color import clip_val_transform
from harness.features.vbench_nets import CLIP_VIT_B32_OPENAI, clip_from_openai_state_dict, load_clip

EVAL_RES = 256  # evaluation.py's --eval_res default
PREPEND = "A photo depicts "
CONTEXT = 77
EOT = 49407


def eval_image(image: Image.Image, eval_res: int = EVAL_RES) -> Image.Image:
    """evaluation.py's `EvalDataset` transform (CenterCropLongEdge, Lanczos resize, ToTensor, Normalize) followed by
    its `tensor2pil`, with torchvision's own functions."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    image = TF.center_crop(image.convert("RGB"), min(image.size))
    image = TF.resize(image, eval_res, interpolation=InterpolationMode.LANCZOS)
    x = TF.normalize(TF.to_tensor(image), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    return Image.fromarray(((x + 1.0) * 127.5).clamp(0.0, 255.0).to(torch.uint8).permute(1, 2, 0).numpy())


def prepend_tokens(tokens: torch.Tensor, prepend: torch.Tensor) -> torch.Tensor:
    """Splice the prompt-prefix tokens after the start token, keep 77 tokens and put the end token last where the
    row was cut (evaluation.py's `compute_clip_score`). `prepend` is the tokenised prefix without start/end.

    >>> t = torch.tensor([[49406, 320, 49407] + [0] * 74]); p = torch.tensor([1, 2, 3])
    >>> prepend_tokens(t, p)[0, :7].tolist()
    [49406, 1, 2, 3, 320, 49407, 0]
    """
    joined = torch.cat([tokens[:, :1], prepend.expand(len(tokens), -1), tokens[:, 1:]], dim=1)[:, :CONTEXT]
    last = joined[:, CONTEXT - 1:CONTEXT].clone()
    last[last > 0] = EOT
    return torch.cat([joined[:, :CONTEXT - 1], last], dim=1)


class ClipScorer:
    """Per-image CLIP score (cosine of image and caption embeddings) of a CLIP model with OpenAI's layout."""

    def __init__(self, model: torch.nn.Module, tokenizer, preprocess, device: str = "cpu", eval_res: int = EVAL_RES):
        self.model = model.eval().to(device)
        self.dtype = next(model.parameters()).dtype
        self.tokenizer, self.preprocess, self.device, self.eval_res = tokenizer, preprocess, device, eval_res
        self.prefix = tokenizer([PREPEND])[0, 1:4]  # evaluation.py: tokenize(prepend_text)[:, 1:4]

    @classmethod
    def from_model(cls, model: torch.nn.Module, device: str = "cpu") -> "ClipScorer":
        import open_clip

        return cls(model, open_clip.get_tokenizer("ViT-B-32"), clip_val_transform(model), device)

    @classmethod
    def from_pretrained(cls, path: str | None = None, device: str = "cpu") -> "ClipScorer":
        """OpenAI's ViT-B/32 from the weights cache (or `path`), hash-checked."""
        return cls.from_model(load_clip(CLIP_VIT_B32_OPENAI, path, device), device)

    @classmethod
    def from_openai_state_dict(cls, state_dict: dict, device: str = "cpu") -> "ClipScorer":
        """Build from a state dict with OpenAI's parameter names (the architecture is read from the shapes)."""
        return cls.from_model(clip_from_openai_state_dict(state_dict, device), device)

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> torch.Tensor:
        """Cosine similarities (N,) of uint8 (H, W, 3) images with their captions."""
        pixels = torch.stack([self.preprocess(eval_image(Image.fromarray(np.asarray(im)), self.eval_res))
                              for im in images]).to(self.device, self.dtype)
        tokens = prepend_tokens(self.tokenizer(list(captions)), self.prefix).to(self.device)
        return F.cosine_similarity(self.model.encode_image(pixels), self.model.encode_text(tokens), dim=1).cpu()


__all__ = ["CLIP_VIT_B32_OPENAI", "ClipScorer", "eval_image", "prepend_tokens"]
