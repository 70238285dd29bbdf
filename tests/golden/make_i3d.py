"""Golden logits of the TATS/VideoGPT PyTorch I3D (the FVD network ARBench re-implements) on seeded weights.

Upstream: songweige/TATS@03bbce1daa3da7e9bff8221e9ec433df9484817f (`tats/fvd/pytorch_i3d.py`, `tats/fvd/fvd.py`).
Run against a checkout:

    python tests/golden/make_i3d.py /path/to/TATS

Upstream's `InceptionI3d(400, in_channels=3)` gets `golden_weights.seeded_fill` weights (seed 50) and BatchNorm
statistics measured on the clips below (a forward pass in training mode with momentum 1, then eval), so no layer
sees constant input; the statistics are stored with the outputs (the rest of the weights are rebuilt from the
seed). Upstream's own `preprocess` (bilinear to 224, half-pixel, `2x/255 - 1`) and forward give the logits of two
uint8 clips of 10 frames at 40x56. TATS builds its BatchNorms with eps 1e-5 (ARBench's default is the TF graph's
1e-3), so the test compares with `I3DConfig(bn_eps=1e-5)`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, seeded_fill  # noqa: E402

UPSTREAM = "songweige/TATS@03bbce1daa3da7e9bff8221e9ec433df9484817f"
OUT = Path(__file__).parent / "i3d"


def main(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    from tats.fvd.fvd import preprocess
    from tats.fvd.pytorch_i3d import InceptionI3d

    torch.set_num_threads(2)
    i3d = seeded_fill(InceptionI3d(400, in_channels=3), 50)
    clips = np.random.default_rng(6).integers(0, 256, (2, 10, 40, 56, 3), dtype=np.uint8)
    x = preprocess(clips, (224, 224))
    bns = [m for m in i3d.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    for bn in bns:
        bn.momentum = 1.0
    i3d.train()
    with torch.no_grad():
        i3d(x)  # momentum 1: the running statistics become this batch's
    i3d.eval()
    with torch.no_grad():
        logits = i3d(x)
        other = i3d(torch.flip(x, dims=[0]))
    assert (logits - other.flip(0)).abs().max() < 1e-4 and (logits[0] - logits[1]).abs().max() > 0.01 * logits.abs().max()
    stats = {k: v.numpy() for k, v in i3d.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "golden.npz", upstream=np.array(UPSTREAM), clips=clips, logits=logits.numpy(),
                        layout=np.array(layout(i3d)), **{f"bn:{k}": v for k, v in stats.items()})
    print(f"wrote {OUT}: logits spread {float(logits.std()):.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
