"""Golden outputs of GenEval's detector, computed by mmdetection 2.x's own Mask2Former (Swin-S, COCO instances).

Upstream: open-mmlab/mmdetection v2.28.2 (the last 2.x release; GenEval's README installs the `2.x` branch, its
`evaluation/evaluate_images.py` at djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f loads
`configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py` with `init_detector` and runs
`inference_detector` on each PNG's path) with open-mmlab/mmcv@v1.7.1 (7a13f995784087ace7cf17ae5f965b6190fe0aea;
GenEval's environment.yml pins mmcv-full==1.7.1). Run against the two source trees, nothing installed and nothing
of them copied here:

    python tests/golden/make_mask2former.py /path/to/mmcv-v1.7.1 /path/to/mmdet-2.28.2

where the mmcv path is a checkout of tag v1.7.1 and the mmdet path is a checkout of v2.28.2 or the unpacked
`mmdet-2.28.2-py3-none-any.whl` from PyPI (sha256 in `MMDET_WHEEL_SHA256`; configs under `mmdet/.mim/configs`).
Both are put on `sys.path`; their Python dependencies (addict, yapf, pycocotools, terminaltables, matplotlib,
opencv) go in a scratch venv.

Stubbed (import-only, none of it runs in the compared function):
- `mmcv._ext`, mmcv's compiled-ops extension (mmcv-full's C++/CUDA build): a module whose every function raises,
  so `mmcv.ops` imports; on CPU mmcv's `MultiScaleDeformableAttention` calls its pure-PyTorch
  `multi_scale_deformable_attn_pytorch` (the CUDA kernel only runs on CUDA tensors), and a call to any compiled op
  would fail the run loudly.
Nothing else is patched; the script runs on today's torch / numpy (GenEval's environment had torch 1.12.1).

What is run: the config as GenEval loads it, with two changes that do not touch the network: the backbone's
`init_cfg` (ImageNet Swin-S download) is dropped, and the test pipeline's `img_scale` is (133, 80) instead of
(1333, 800) so that the full Swin-S (depths 2-2-18-2) runs in seconds on a CPU; everything else (keep-ratio cv2
resize, Pad to /32 with 128 *before* Normalize, mean/std, post-processing with 100 detections) is the config's.
Weights: `golden_weights.seeded_fill` (seed 16) on mmdet's model (the relative position index buffers kept), saved
in the released file's layout `{"meta": {...}, "state_dict": ...}` and loaded back by `init_detector(config,
path)`, as GenEval does. Inputs: two small RGB PNGs (48x64 and 64x30, seeded shapes and noise) whose resized
sizes are not multiples of 32, so padding, shifted windows over padding and odd deformable-attention grids occur.

Recorded per image (tests/golden/mask2former/golden.npz): the image; the backbone's input; the 4 Swin stage
outputs; the pixel decoder's mask features and its 3 multi-scale outputs; the class and mask logits after each
of the 10 decoder predictions (`Mask2FormerHead.forward`); and GenEval's input, `inference_detector`'s
(bbox_results, mask_results) flattened in class order: labels, boxes, scores, binary masks (bit-packed).
Random weights make the 100 queries nearly alike (a few classes, near-equal masks), so the post-processing is
also run alone on varied logits (`synthetic_logits`: the head's forward returns them, the rest of
`inference_detector` runs as is) and its detections stored as `synthetic_*`.
Big tensors are kept at `sample_index(size)` (every 7919th element modulo the size, 1024 of them; the last
layer's class logits whole, its mask logits at 4096 positions) to stay small. Also stored: mmdet's state-dict
layout (names and shapes) and one relative position index, so the test builds the checkpoint from upstream's
buffer rather than the port's.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

UPSTREAM = ("open-mmlab/mmdetection@v2.28.2 + open-mmlab/mmcv@7a13f995784087ace7cf17ae5f965b6190fe0aea (v1.7.1), "
            "config mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco as djghosh13/geneval@af4902f runs it")
MMDET_WHEEL_SHA256 = "30ac4dc275f838397872a4d43f77541e46cf8dc8431f796ddf10d7e4adfd9fe4"
CONFIG = "mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py"
OUT = Path(__file__).parent / "mask2former"
SEED = 16
SCALE = (133, 80)
IMAGE_SIZES = ((48, 64), (64, 30))  # (height, width)
SAMPLES = 1024


def sample_index(size: int, n: int = SAMPLES) -> np.ndarray:
    """The stored positions of a flattened tensor of `size` elements (all of them when it is small)."""
    if size <= n:
        return np.arange(size)
    return np.unique((np.arange(n, dtype=np.int64) * 7919 + 13) % size)


def test_image(k: int, size: tuple[int, int]) -> np.ndarray:
    """A seeded RGB image: a colour gradient, two filled rectangles and noise."""
    rng = np.random.default_rng(100 + k)
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    image = np.stack([xs * 255 / w, ys * 255 / h, np.full((h, w), 90.0)], -1)
    for _ in range(2):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        image[y0:y0 + rng.integers(4, h // 2), x0:x0 + rng.integers(4, w // 2)] = rng.integers(0, 256, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def synthetic_logits(k: int, mask_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Varied final class and mask logits for checking the post-processing alone (random-weight networks give
    near-identical queries): class logits N(0, 3^2); masks a bilinear-upsampled 4x4 field plus a per-query offset,
    so mask areas range from empty to full; queries 0-4 have empty masks and a confident class 3."""
    gen = torch.Generator().manual_seed(1000 + k)
    cls = torch.randn(1, 100, 81, generator=gen) * 3
    coarse = torch.randn(1, 100, 4, 4, generator=gen) * 6 + torch.randn(1, 100, 1, 1, generator=gen) * 4
    coarse[:, :5] = -30.0
    cls[:, :5, 3] = 10.0
    return cls, torch.nn.functional.interpolate(coarse, size=mask_hw, mode="bilinear", align_corners=False)


def flatten_results(bbox_results, mask_results, size) -> dict[str, np.ndarray]:
    """mmdet's per-class (n, 5) arrays and mask lists as flat labels, boxes, scores and bit-packed masks."""
    labels = np.concatenate([np.full(len(rows), c) for c, rows in enumerate(bbox_results)]).astype(np.int64)
    rows = np.concatenate(bbox_results).astype(np.float32)
    masks = np.stack([m for per_class in mask_results for m in per_class])
    assert len(labels) == len(masks) == 100 and masks.shape[1:] == size
    return {"labels": labels, "boxes": rows[:, :4], "scores": rows[:, 4], "masks": np.packbits(masks, axis=-1)}


def import_upstream(mmcv_root: Path, mmdet_root: Path):
    ext = types.ModuleType("mmcv._ext")

    def missing(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def compiled_op(*args, **kwargs):
            raise RuntimeError(f"mmcv compiled op {name} called (stubbed: not built here)")
        return compiled_op

    ext.__getattr__ = missing
    sys.modules["mmcv._ext"] = ext
    sys.path[:0] = [str(mmcv_root), str(mmdet_root)]
    import mmcv
    import mmdet
    from mmdet.apis import inference_detector, init_detector

    assert mmcv.__version__ == "1.7.1" and mmdet.__version__ == "2.28.2", (mmcv.__version__, mmdet.__version__)
    return mmcv, mmdet, init_detector, inference_detector


def config_path(mmdet_root: Path) -> Path:
    for base in (mmdet_root / "configs", mmdet_root / "mmdet" / ".mim" / "configs"):
        if (base / CONFIG).is_file():
            return base / CONFIG
    raise SystemExit(f"{CONFIG} not found under {mmdet_root}")


def main(mmcv_root: Path, mmdet_root: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))  # here, not at import: the test imports this module
    from golden_weights import save_golden, seeded_fill

    mmcv, mmdet, init_detector, inference_detector = import_upstream(mmcv_root, mmdet_root)
    cfg = mmcv.Config.fromfile(str(config_path(mmdet_root)))
    cfg.model.backbone.init_cfg = None
    flip_aug = cfg.data.test.pipeline[1]
    assert flip_aug.type == "MultiScaleFlipAug" and tuple(flip_aug.img_scale) == (1333, 800)
    flip_aug.img_scale = SCALE

    model = init_detector(cfg, None, device="cpu")
    state = seeded_fill(model, SEED).state_dict()
    layout = {name: list(t.shape) for name, t in state.items()}
    index = state["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"].numpy()
    arrays: dict[str, np.ndarray] = {"layout": np.array(json.dumps(layout)), "relative_position_index": index,
                                     "scale": np.array(SCALE)}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"
        from mmdet.core import get_classes
        torch.save({"meta": {"mmdet_version": mmdet.__version__, "CLASSES": tuple(get_classes("coco"))},
                    "state_dict": dict(state)}, checkpoint)
        model = init_detector(cfg, str(checkpoint), device="cpu")  # GenEval's own loading
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())

        recorded: dict[str, object] = {}
        head = model.panoptic_head
        hooks = [
            model.backbone.register_forward_pre_hook(lambda m, args: recorded.__setitem__("input", args[0])),
            model.backbone.register_forward_hook(lambda m, args, out: recorded.__setitem__("backbone", out)),
            head.pixel_decoder.register_forward_hook(lambda m, args, out: recorded.__setitem__("pixel_decoder", out)),
            head.register_forward_hook(lambda m, args, out: recorded.__setitem__("head", out)),
        ]

        def keep(name: str, tensor: torch.Tensor, n: int = SAMPLES) -> None:
            flat = tensor.detach().float().numpy().reshape(-1)
            arrays[name] = flat[sample_index(flat.size, n)]
            arrays[f"{name}.shape"] = np.array(tensor.shape)

        for k, size in enumerate(IMAGE_SIZES):
            image = test_image(k, size)
            path = Path(tmp) / f"{k:04d}.png"
            Image.fromarray(image).save(path)
            recorded.clear()
            with torch.no_grad():
                bbox_results, mask_results = inference_detector(model, str(path))
            arrays[f"image{k}"] = image
            keep(f"input{k}", recorded["input"])
            for i, feat in enumerate(recorded["backbone"]):
                keep(f"backbone{k}.{i}", feat)
            mask_feature, multi_scale = recorded["pixel_decoder"]
            keep(f"mask_feature{k}", mask_feature)
            for i, feat in enumerate(multi_scale):
                keep(f"multi_scale{k}.{i}", feat)
            cls_list, mask_list = recorded["head"]
            for i, (cls, mask) in enumerate(zip(cls_list, mask_list)):
                last = i == len(cls_list) - 1
                keep(f"cls{k}.{i}", cls, cls.numel() if last else SAMPLES)
                keep(f"masks{k}.{i}", mask, 4 * SAMPLES if last else SAMPLES)
            for key, value in flatten_results(bbox_results, mask_results, size).items():
                arrays[f"{key}{k}"] = value
            print(f"image {k} {size}: input {tuple(recorded['input'].shape)}, scores "
                  f"{arrays[f'scores{k}'].min():.4f}-{arrays[f'scores{k}'].max():.4f}, "
                  f"{len(np.unique(arrays[f'labels{k}']))} classes, {len(np.unique(arrays[f'boxes{k}'], axis=0))} boxes")

            # the post-processing alone on varied logits: the head's forward replaced, the rest of the chain is
            # inference_detector's (head upsampling, fusion head crop/resize/instance_postprocess, bbox2result)
            cls, masks = synthetic_logits(k, tuple(mask_list[-1].shape[-2:]))
            head.forward = lambda feats, img_metas: ([cls], [masks])
            with torch.no_grad():
                bbox_results, mask_results = inference_detector(model, str(path))
            del head.forward
            for key, value in flatten_results(bbox_results, mask_results, size).items():
                arrays[f"synthetic_{key}{k}"] = value
            print(f"  synthetic: {len(np.unique(arrays[f'synthetic_labels{k}']))} classes, "
                  f"{len(np.unique(arrays[f'synthetic_boxes{k}'], axis=0))} boxes")
        for hook in hooks:
            hook.remove()
    save_golden(OUT, UPSTREAM, arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
