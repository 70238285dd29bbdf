"""RAFT optical flow as VBench runs it (dynamic degree, and the static filter of temporal flickering).

VBench (Vchitect/VBench@45e79ec, `vbench/dynamic_degree.py`, `static_filter.py`) runs princeton-vl/RAFT's
`RAFT(small=False)` with `raft-things.pth` in test mode, 20 iterations, on two frames given as float 0..255,
each pair padded by `InputPadder` ("sintel" mode: replicate padding split evenly to a multiple of 8), and reads the
upsampled flow at the **padded** size.

torchvision's `raft_large` is the same network (its `C_T_V1` weights are raft-things ported by name), so it is
used here; `raft_things_to_torchvision` maps the released checkpoint's parameter names onto it (the golden test
checks the flows against VBench's vendored RAFT on seeded weights). torchvision expects inputs already in
[-1, 1] and sides divisible by 8; the padding and `2 * x / 255 - 1` are done here as RAFT's `forward` does.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ArbenchError
from harness.weights import WeightSpec, register_weights

RAFT_THINGS = register_weights(WeightSpec(
    name="raft-things",
    filename="raft-things.pth",
    url="https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
    sha256=None,  # princeton-vl/RAFT publishes none; the file's digest goes into the signature
    license="BSD-3-Clause (princeton-vl/RAFT)",
    description="RAFT trained on FlyingChairs + FlyingThings3D (models/raft-things.pth inside models.zip: unzip "
                "it and put raft-things.pth in the cache); VBench dynamic degree and static filter",
))
ITERATIONS = 20

_RULES = [  # (pattern on the released name, replacement) in order; names are matched after "module." is dropped
    (r"^fnet\.", "feature_encoder."), (r"^cnet\.", "context_encoder."),
    (r"^(\w+_encoder)\.conv1\.", r"\1.convnormrelu.0."), (r"^(\w+_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"^(\w+_encoder)\.conv2\.", r"\1.conv."),
    (r"(layer\d\.\d)\.conv1\.", r"\1.convnormrelu1.0."), (r"(layer\d\.\d)\.norm1\.", r"\1.convnormrelu1.1."),
    (r"(layer\d\.\d)\.conv2\.", r"\1.convnormrelu2.0."), (r"(layer\d\.\d)\.norm2\.", r"\1.convnormrelu2.1."),
    (r"^update_block\.encoder\.convc1\.", "update_block.motion_encoder.convcorr1.0."),
    (r"^update_block\.encoder\.convc2\.", "update_block.motion_encoder.convcorr2.0."),
    (r"^update_block\.encoder\.convf1\.", "update_block.motion_encoder.convflow1.0."),
    (r"^update_block\.encoder\.convf2\.", "update_block.motion_encoder.convflow2.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])1\.", r"update_block.recurrent_block.convgru1.conv\1."),
    (r"^update_block\.gru\.conv([zrq])2\.", r"update_block.recurrent_block.convgru2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
]


def raft_things_to_torchvision(state_dict: dict) -> dict:
    """princeton-vl/RAFT parameter names -> torchvision `raft_large` names.

    A residual block's `norm3` is the same module as its `downsample.1` (registered twice upstream), so its
    duplicate entries are dropped.

    >>> sorted(raft_things_to_torchvision({"module.update_block.gru.convq2.weight": 0,
    ...                                    "module.cnet.layer2.0.norm3.weight": 1}))
    ['update_block.recurrent_block.convgru2.convq.weight']
    """
    out = {}
    for name, value in state_dict.items():
        name = name.removeprefix("module.")
        if re.search(r"layer\d\.\d\.norm3\.", name):
            continue
        for pattern, replacement in _RULES:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    return out


def build_raft_large() -> torch.nn.Module:
    from torchvision.models.optical_flow import raft_large

    return raft_large(weights=None, progress=False)


def load_raft(path: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """torchvision `raft_large` with raft-things.pth (a plain state dict, read with `weights_only=True`)."""
    state = torch.load(RAFT_THINGS.resolve(path), map_location="cpu", weights_only=True)
    model = build_raft_large()
    try:
        model.load_state_dict(raft_things_to_torchvision(state), strict=True)
    except RuntimeError as exc:
        raise ArbenchError(f"{RAFT_THINGS.cache_path} is not princeton-vl/RAFT's raft-things.pth (RAFT large): "
                           f"{str(exc)[:300]}") from exc
    return model.eval().to(device)


def sintel_pad(x: torch.Tensor) -> torch.Tensor:
    """RAFT's `InputPadder(mode="sintel").pad`: replicate padding to sides divisible by 8, split evenly."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (((h // 8) + 1) * 8 - h) % 8, (((w // 8) + 1) * 8 - w) % 8
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], mode="replicate")


@torch.no_grad()
def raft_flow(model: torch.nn.Module, frame1: np.ndarray, frame2: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Upsampled flow ``[2, H', W']`` (float32, at the padded size) from two uint8 ``[H, W, 3]`` RGB frames."""
    pair = torch.stack([torch.as_tensor(np.asarray(f)).permute(2, 0, 1).float() for f in (frame1, frame2)])
    pair = 2 * (sintel_pad(pair.to(device)) / 255.0) - 1.0
    flows = model(pair[:1].contiguous(), pair[1:].contiguous(), num_flow_updates=ITERATIONS)
    return flows[-1][0].float().cpu().numpy()


def top_flow_magnitude(flow: np.ndarray, fraction: float) -> float:
    """VBench's `get_score`: the mean of the largest ``int(H * W * fraction)`` flow magnitudes (float32).

    >>> flow = np.zeros((2, 4, 5), np.float32); flow[0, 0, :2] = [3.0, 4.0]
    >>> top_flow_magnitude(flow, 0.1)
    3.5
    """
    u, v = np.asarray(flow[0], np.float32), np.asarray(flow[1], np.float32)
    rad = np.sqrt(np.square(u) + np.square(v)).flatten()
    cut = int(rad.size * fraction)
    return float(np.mean(np.abs(np.sort(-rad))[:cut]))
