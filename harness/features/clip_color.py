"""GenEval's colour classifier: zero-shot CLIP ViT-L/14 (OpenAI weights) over 10 colours on masked box crops.

Faithful to GenEval's `color_classification`: the object's pixels are kept by its instance mask over a #999999
canvas, the result is cropped to the detection box, passed through CLIP's validation transform (shortest side 224
bicubic, centre crop, OpenAI mean/std) and compared with one text embedding per colour, the renormalised mean of
three L2-normalised template embeddings (clip_benchmark's `zero_shot_classifier`).

The weights are OpenAI's TorchScript release, whose URL carries its sha256. They are loaded with
`torch.jit.load` (a TorchScript archive, not a pickle of arbitrary objects) and only their state dict is used,
rebuilt by open_clip into a QuickGELU model: OpenAI's CLIP was trained with QuickGELU, and open_clip >= 2.29
would silently build a GELU model for `ViT-L-14` + "openai".
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.metrics.geneval import COLORS, Detection
from harness.weights import WeightSpec, register_weights

CLIP_VIT_L14_OPENAI = register_weights(WeightSpec(
    name="clip-vit-l14-openai",
    filename="ViT-L-14.pt",
    url="https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    license="MIT (OpenAI CLIP)",
    description="OpenAI CLIP ViT-L/14 (TorchScript); GenEval's colour classifier",
))
BACKGROUND = "#999999"
TEMPLATES = ("a photo of a {c} {obj}", "a photo of a {c}-colored {obj}", "a photo of a {c} object")
COLOR_MODEL_ID = f"clip-vit-l14-openai-quickgelu-fp32:{CLIP_VIT_L14_OPENAI.sha256[:12]};bg={BACKGROUND};crop=box"


def masked_crop(image: Image.Image, detection: Detection, background: str = BACKGROUND) -> Image.Image:
    """The detection's pixels over a flat grey canvas (GenEval's bgcolor), cropped to its box."""
    if detection.mask is not None:
        canvas = Image.new("RGB", image.size, background)
        image = Image.composite(image, canvas, Image.fromarray(np.asarray(detection.mask, dtype=bool)))
    return image.crop(tuple(detection.box))


class ColorClassifier:
    """Predicts one of GenEval's 10 colours per detection; text classifiers are cached per object class."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, preprocess: Callable, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = device
        self._text_weights: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, path: str | None = None, device: str = "cpu") -> "ColorClassifier":
        """OpenAI's ViT-L/14 from the weights cache (or `path`), hash-checked."""
        state_dict = torch.jit.load(str(CLIP_VIT_L14_OPENAI.resolve(path)), map_location="cpu").state_dict()
        return cls.from_openai_state_dict(state_dict, device)

    @classmethod
    def from_openai_state_dict(cls, state_dict: dict, device: str = "cpu") -> "ColorClassifier":
        """Build from a state dict with OpenAI's parameter names (the architecture is read from the shapes)."""
        import open_clip

        model = open_clip.model.build_model_from_openai_state_dict(dict(state_dict), quick_gelu=True,
                                                                   cast_dtype=None).float()
        return cls(model, open_clip.get_tokenizer("ViT-L-14"), clip_val_transform(model), device)

    @torch.no_grad()
    def text_weights(self, object_name: str) -> torch.Tensor:
        """(D, 10) matrix: per colour, the renormalised mean of the normalised template embeddings."""
        if object_name not in self._text_weights:
            columns = []
            for color in COLORS:
                tokens = self.tokenizer([t.format(c=color, obj=object_name) for t in TEMPLATES]).to(self.device)
                embedding = F.normalize(self.model.encode_text(tokens).float(), dim=-1).mean(dim=0)
                columns.append(embedding / embedding.norm())
            self._text_weights[object_name] = torch.stack(columns, dim=1)
        return self._text_weights[object_name]

    @torch.no_grad()
    def logits(self, image: Image.Image, detections: Sequence[Detection], object_name: str) -> torch.Tensor:
        crops = torch.stack([self.preprocess(masked_crop(image, d)) for d in detections]).to(self.device)
        features = F.normalize(self.model.encode_image(crops).float(), dim=-1)
        return 100.0 * features @ self.text_weights(object_name)

    def classify(self, image: Image.Image, detections: Sequence[Detection], object_name: str) -> list[str]:
        """The predicted colour name of each detection of `object_name` on `image`."""
        if not detections:
            return []
        return [COLORS[i] for i in self.logits(image, detections, object_name).argmax(dim=1).tolist()]


def clip_val_transform(model: torch.nn.Module):
    """open_clip's validation transform for the model's image size (OpenAI mean/std, bicubic, centre crop)."""
    import open_clip

    return open_clip.image_transform(model.visual.image_size, is_train=False)
