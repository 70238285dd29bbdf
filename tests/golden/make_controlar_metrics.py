"""Golden controllability scores of upstream ControlAR's evaluation code (tests/golden/controlar_metrics/golden.npz),
for tests/test_controlar_multigen.py.

Upstream: hustvl/ControlAR @ 87e32e97416277fcecf9c03a998263399a4af331 (2025-04-24).
Usage: python tests/golden/make_controlar_metrics.py /path/to/ControlAR-checkout

Images: `images(seed)` below (numpy PCG64 streams, rebuilt by the test): three 192 x 192 "generated" RGB images
with the canny and HED controls they are scored against (the canny map of other images, a soft map), and two
512 x 512 ones with depth-like controls (depth_rmse.py compares DPT's 512 x 512 output with the control as is).
Upstream code run as it is: `condition/canny.py` CannyDetector and `condition/hed.py` ControlNetHED_Apache2 with
HEDdetector.__call__ (on `hed_state` weights: the released file is not needed, so
HEDdetector.__init__, which downloads it, is bypassed with __new__). The loop bodies of
`evaluations/canny_f1score.py`, `hed_ssim.py` and `depth_rmse.py` are scripts (they run on import against fixed
folders) and are written out below as they are there, with torchmetrics' BinaryF1Score and
MultiScaleStructuralSimilarityIndexMeasure, and transformers' DPTForDepthEstimation / DPTImageProcessor
(a 2-layer DPT with seeded weights and the preprocessing of Intel/dpt-large's preprocessor_config.json).
Outputs: the canny controls, HED and DPT outputs (subsampled), per-image F1, per-image MS-SSIM (batches of one) and the batch-of-three MS-SSIM, per-image depth RMSE.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden, seeded_state  # noqa: E402

UPSTREAM = "hustvl/ControlAR@87e32e97416277fcecf9c03a998263399a4af331"
OUT = Path(__file__).resolve().parent / "controlar_metrics"
SEED = 21
SIZE = 192
#: Intel/dpt-large preprocessor_config.json (the values that matter; upstream overrides `size`)
DPT_PROCESSOR = dict(do_resize=True, size={"height": 384, "width": 384}, keep_aspect_ratio=False, ensure_multiple_of=1,
                     resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                     image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
#: a 2-layer DPT (ViT hybrid off) small enough to run at 512 x 512 on a CPU
DPT_TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=384,
                patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16,
                head_in_index=-1, is_hybrid=False, reassemble_factors=[4, 2, 1, 0.5])


def hed_state(reference: dict) -> dict:
    """`seeded_state`, with the first convolution scaled by 1/64: the network takes 0..255 pixels, and at the
    seeded scale its side outputs would saturate the sigmoid (every edge ~255, a comparison that shows little)."""
    state = seeded_state(reference, SEED)
    state["block1.convs.0.weight"] = state["block1.convs.0.weight"] / 64
    return state


def smooth(rng: np.random.Generator, shape, k: int = 9) -> np.ndarray:
    x = torch.from_numpy(rng.random(shape)).float()
    return F.avg_pool2d(x, k, 1, k // 2).numpy()


def images(seed: int = SEED) -> dict[str, np.ndarray]:
    """The inputs: uint8 generated images (3, S, S, 3) and the three kinds of control maps (3, S, S)."""
    rng = np.random.default_rng(seed)
    generated = (smooth(rng, (3, 3, SIZE, SIZE), 5) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    other = (smooth(rng, (3, 3, SIZE, SIZE), 5) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    hed = (smooth(rng, (3, SIZE, SIZE)) * 255).round().astype(np.uint8)
    generated_512 = (smooth(rng, (2, 3, 512, 512), 5) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    depth = (smooth(rng, (2, 512, 512), 15) * 255).round().astype(np.uint8)
    return {"generated": generated, "other": other, "hed": hed, "generated_512": generated_512, "depth": depth}


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    from torchmetrics.classification import BinaryF1Score
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    from condition.canny import CannyDetector
    from condition.hed import ControlNetHED_Apache2, HEDdetector

    data = images()
    gen = torch.from_numpy(data["generated"])
    out = {}
    # canny controls: what test_t2i.py saves for canny (the canny of the source image, 0/255), here other images
    detector = CannyDetector()
    labels = np.stack([detector(img) for img in data["other"]])
    out["canny_control"] = labels
    # canny_f1score.py
    f1score = BinaryF1Score()
    f1 = []
    outputs = [detector(img) for img in gen]
    for pred, label in zip(outputs, labels.copy()):
        pred[pred == 255] = 1
        label[label == 255] = 1
        f1.append(f1score(torch.from_numpy(pred).flatten(), torch.from_numpy(label).flatten()).item())
    out["canny_f1"] = np.array(f1)

    # hed_ssim.py
    model = HEDdetector.__new__(HEDdetector)
    torch.nn.Module.__init__(model)
    model.netNetwork = ControlNetHED_Apache2().float()
    model.netNetwork.load_state_dict(hed_state(model.netNetwork.state_dict()))
    model.eval()
    ssim = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)
    hed_labels = torch.from_numpy(data["hed"])[:, None]
    with torch.no_grad():
        images_ = gen.permute(0, 3, 1, 2)
        predicted_hed = model(images_).unsqueeze(1)
        out["hed_of_generated"] = predicted_hed[:, 0, ::4, ::4].numpy()  # every 4th pixel (small file)
        out["hed_ssim_batch"] = np.array(float(ssim((predicted_hed / 255.0).clip(0, 1), (hed_labels / 255.0).clip(0, 1))))
        out["hed_ssim"] = np.array([float(ssim((predicted_hed[i:i + 1] / 255.0).clip(0, 1),
                                               (hed_labels[i:i + 1] / 255.0).clip(0, 1))) for i in range(3)])

    # depth_rmse.py (labels as saved: RGB PNGs whose first channel is read)
    processor = DPTImageProcessor(**DPT_PROCESSOR)
    torch.manual_seed(0)
    dpt = DPTForDepthEstimation(DPTConfig(**DPT_TINY))
    dpt.load_state_dict(seeded_state(dpt.state_dict(), SEED))
    dpt.eval()
    depth_labels = torch.from_numpy(np.repeat(data["depth"][:, :, :, None], 3, axis=3)).permute(0, 3, 1, 2)
    rmse = []
    with torch.no_grad():
        inputs = processor(images=[img for img in data["generated_512"]], return_tensors="pt", size=(512, 512))
        outputs = dpt(**inputs)
        predicted_depth = outputs.predicted_depth
        predicted_depth = predicted_depth.squeeze().cpu()
        labels_ = depth_labels[:, 0, :, :]
        for pred, label in zip(predicted_depth, labels_):
            pred = (pred * 255 / pred.max())
            rmse.append(torch.sqrt(F.mse_loss(pred.float(), label.float())))
    out["depth_prediction"] = predicted_depth[:, ::16, ::16].numpy().astype(np.float32)  # every 16th pixel
    out["depth_rmse"] = np.array([float(r) for r in rmse])
    save_golden(OUT, UPSTREAM, out)
    for k, v in out.items():
        print(k, v.shape, v if v.size <= 3 else float(np.abs(v).mean()))


if __name__ == "__main__":
    main(sys.argv[1])
