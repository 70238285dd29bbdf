"""VideoMAE-v2 ViT-g features for content-debiased FVD (cd-FVD, Ge et al. 2024, "On the Content Bias in
Fréchet Video Distance").

The network definition is the one the `cd-fvd` package ships (its copy of VideoMAEv2's
`vit_giant_patch14_224`, fine-tuned on SSv2: 174 classes, 16 frames, tubelet 2); its loader downloads
and unpickles without `weights_only`, so the loading and preprocessing are the project's own: the
checkpoint is read with `torch.load(weights_only=True)` and loaded strictly. Features are the model's
`forward_features` (mean over tokens, then `fc_norm`): 1408 dims. Preprocessing as cd-fvd: uint8 / 255,
each frame resized to 224x224 bilinear (half-pixel, no antialias), no mean/std normalisation.

cd-FVD is a different metric from FVD (other network, other training data): never compare the two.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ArbenchError
from harness.weights import WeightSpec, register_weights

FEATURE_DIM = 1408
INPUT_SIZE = 224
PREPROCESS = "uint8/255-bilinear-224-halfpixel-noantialias-nonorm"
RELEASED_CONFIG = dict(img_size=INPUT_SIZE, num_classes=174, all_frames=16, tubelet_size=2, use_mean_pooling=True)

VIDEOMAE_V2_G = register_weights(WeightSpec(
    name="videomae-v2-g-ssv2",
    filename="vit_g_hybrid_pt_1200e_ssv2_ft.pth",
    url="https://pjlab-gvm-data.oss-cn-shanghai.aliyuncs.com/internvideo/videomaev2/vit_g_hybrid_pt_1200e_ssv2_ft.pth",
    sha256=None,  # not published upstream: runs record the sha256 of the file they used
    license="see OpenGVLab/VideoMAEv2 (model weights for research use)",
    description="VideoMAE-v2 ViT-g/14, hybrid pre-training, SSv2 fine-tuned: the cd-FVD feature network",
))


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build a module with its parameters on the meta device (names and shapes, no memory)."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def build_videomae_v2(meta: bool = False, **overrides) -> torch.nn.Module:
    """The released ViT-g configuration (or a smaller one for tests, through `overrides` of the
    VisionTransformer arguments); `meta=True` allocates no parameter memory."""
    from cdfvd.third_party.VideoMAEv2.videomaev2_finetune import VisionTransformer, vit_giant_patch14_224

    kwargs = {**RELEASED_CONFIG, "drop_path_rate": 0.0}  # drop path is inert at inference
    if overrides:
        from functools import partial

        kwargs.update(dict(qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)), **overrides)
        build = lambda: VisionTransformer(**kwargs)  # noqa: E731
    else:
        build = lambda: vit_giant_patch14_224(pretrained=False, **kwargs)  # noqa: E731
    if meta:
        with _parameters_on_meta():
            return build()
    return build()


def load_videomae_v2(path: str | Path, model: torch.nn.Module | None = None) -> torch.nn.Module:
    """Load a VideoMAE-v2 checkpoint safely and strictly; mismatches are listed in one message."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ArbenchError(f"{path} cannot be loaded with weights_only=True (refused: it is not a plain "
                           f"checkpoint of tensors): {str(exc).splitlines()[0][:200]}") from exc
    for key in ("model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    model = model if model is not None else build_videomae_v2()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or misshaped:
        raise ArbenchError(
            f"{path} is not a VideoMAE-v2 checkpoint of this configuration: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}, wrong shapes {misshaped[:5]}. Use {VIDEOMAE_V2_G.filename} "
            f"from {VIDEOMAE_V2_G.url}."
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess(clips: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 [N, T, H, W, 3] -> float [N, 3, T, size, size] in [0, 1], as cd-fvd feeds VideoMAE."""
    x = torch.as_tensor(np.asarray(clips)).float().div_(255.0)
    n, t, h, w, _ = x.shape
    frames = x.permute(0, 1, 4, 2, 3).reshape(n * t, 3, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    return frames.reshape(n, t, 3, size, size).permute(0, 2, 1, 3, 4)


def videomae_features(model: torch.nn.Module, device: str = "cpu",
                      size: int = INPUT_SIZE) -> Callable[[np.ndarray], torch.Tensor]:
    """A feature function for `harness.metrics.video.clip_statistics`: clips -> [N, 1408] (fp32)."""
    model = model.to(device).eval()

    @torch.no_grad()
    def features(clips: np.ndarray) -> torch.Tensor:
        return model.forward_features(preprocess(clips, size).to(device)).float().cpu()

    return features
