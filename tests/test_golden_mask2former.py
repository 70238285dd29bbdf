"""GenEval's detector against mmdetection 2.x's own Mask2Former (golden data from tests/golden/make_mask2former.py).

The full Swin-S network with the generating script's seeded weights is saved in the released checkpoint layout and
loaded through `geneval_detector.load_checkpoint`; on the same PNGs it must give mmdet's preprocessed input, Swin
stage outputs, pixel-decoder outputs, class and mask logits of all 10 decoder predictions, and the detections that
`inference_detector` hands GenEval; the post-processing alone must reproduce mmdet's on varied logits.
Only the test-time resize scale is smaller than the released config's (133 x 80 instead of 1333 x 800).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from golden.golden_weights import seeded_state
from golden.make_mask2former import SEED, sample_index, synthetic_logits
from harness.features import geneval_detector as gd

GOLDEN = Path(__file__).parent / "golden" / "mask2former" / "golden.npz"
IMAGES = (0, 1)
# Float32 on CPU: the backbone and pixel decoder agree to the bit here; the decoder's attention takes another
# kernel path (measured up to 2.4e-5 on mask logits of scale 20), hence 1e-5 relative + 1e-5 of the tensor's scale.
RTOL, SCALE_TOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.fixture(scope="module")
def cfg(golden):
    return dataclasses.replace(gd.Mask2FormerConfig(), scale=tuple(int(v) for v in golden["scale"]))


@pytest.fixture(scope="module")
def model(golden, cfg, tmp_path_factory):
    """The seeded weights, written as mmdet's released file and read back by ARBench's loader (strict, safe)."""
    reference = gd.Mask2Former(cfg).state_dict()
    layout = json.loads(str(golden["layout"]))
    assert {k: list(v.shape) for k, v in reference.items()} == layout  # mmdet's names and shapes, nothing else
    index = torch.from_numpy(golden["relative_position_index"])
    state = seeded_state(reference, SEED, keep=[k for k in reference if k.endswith("relative_position_index")])
    state.update({k: index.clone() for k in state if k.endswith("relative_position_index")})  # upstream's buffer
    path = tmp_path_factory.mktemp("m2f") / "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"
    torch.save({"meta": {"mmdet_version": "2.28.2", "CLASSES": gd.COCO_CLASSES}, "state_dict": state}, path)
    return gd.load_checkpoint(path, gd.Mask2Former(cfg)).eval()


@pytest.fixture(scope="module")
def outputs(golden, cfg, model):
    """ARBench's intermediate tensors and detections for each golden image, from one `GenEvalDetector.detect` run
    each (recorded by hooks), named as in the golden file."""
    head = model.panoptic_head
    detector = gd.GenEvalDetector(model)
    result: dict = {}
    for k in IMAGES:
        seen: dict = {"predictions": []}
        hooks = [model.register_forward_pre_hook(lambda m, args: seen.__setitem__("input", args[0])),
                 model.backbone.register_forward_hook(lambda m, args, out: seen.__setitem__("backbone", out)),
                 head.pixel_decoder.register_forward_hook(lambda m, args, out: seen.__setitem__("decoder", out))]
        predict = head.predict
        head.predict = lambda *args: seen["predictions"].append(predict(*args)) or seen["predictions"][-1]
        try:
            result[f"detections{k}"] = detector.detect(Image.fromarray(golden[f"image{k}"]))
        finally:
            del head.predict
            for hook in hooks:
                hook.remove()
        result[f"input{k}"] = seen["input"]
        result.update({f"backbone{k}.{i}": f for i, f in enumerate(seen["backbone"])})
        result[f"mask_feature{k}"] = seen["decoder"][0]
        result.update({f"multi_scale{k}.{i}": f for i, f in enumerate(seen["decoder"][1])})
        for i, (cls, masks, _) in enumerate(seen["predictions"]):
            result[f"cls{k}.{i}"], result[f"masks{k}.{i}"] = cls, masks
    return result


def assert_close_to_golden(golden, name, tensor):
    assert tuple(tensor.shape) == tuple(golden[f"{name}.shape"]), name
    expected = golden[name]
    flat = tensor.detach().numpy().reshape(-1)
    got = flat[sample_index(flat.size, expected.size)]
    tol = RTOL * np.abs(expected) + SCALE_TOL * np.abs(expected).max()
    worst = np.abs(got - expected) - tol
    assert (worst <= 0).all(), f"{name}: max |diff| {np.abs(got - expected).max():.3g} (scale {np.abs(expected).max():.3g})"


STAGES = ["input"] + [f"backbone{{}}.{i}" for i in range(4)] + ["mask_feature"] + [f"multi_scale{{}}.{i}"
                                                                                  for i in range(3)]


@pytest.mark.parametrize("k", IMAGES)
def test_preprocessing_backbone_and_pixel_decoder_equal_mmdets(golden, outputs, k):
    for stage in STAGES:
        name = stage.format(k) if "{}" in stage else f"{stage}{k}"
        assert_close_to_golden(golden, name, outputs[name])


@pytest.mark.parametrize("k", IMAGES)
def test_every_decoder_prediction_equals_mmdets(golden, outputs, k):
    assert sum(name.startswith(f"cls{k}.") for name in outputs) == 10  # the query-only one + 9 layers
    for i in range(10):
        assert_close_to_golden(golden, f"cls{k}.{i}", outputs[f"cls{k}.{i}"])
        assert_close_to_golden(golden, f"masks{k}.{i}", outputs[f"masks{k}.{i}"])


def golden_detections(golden, prefix: str, k: int) -> dict[int, list[tuple]]:
    masks = np.unpackbits(golden[f"{prefix}masks{k}"], axis=-1, count=golden[f"image{k}"].shape[1]).astype(bool)
    per_class: dict[int, list[tuple]] = {}
    for label, box, score, mask in zip(golden[f"{prefix}labels{k}"], golden[f"{prefix}boxes{k}"],
                                       golden[f"{prefix}scores{k}"], masks):
        per_class.setdefault(int(label), []).append((tuple(box.tolist()), float(score), mask))
    return per_class


def assert_same_detections(ours: dict, expected: dict[int, list[tuple]]):
    """Per class, highest score first (the order GenEval's rules read them in): same boxes, masks and scores."""
    assert {gd.COCO_CLASSES.index(name): len(dets) for name, dets in ours.items()} == \
        {label: len(dets) for label, dets in expected.items()}
    for label, want in expected.items():
        got = sorted(ours[gd.COCO_CLASSES[label]], key=lambda d: -d.score)
        want = sorted(want, key=lambda d: -d[1])
        np.testing.assert_allclose([d.score for d in got], [d[1] for d in want], rtol=1e-5, atol=1e-7)
        assert [tuple(d.box) for d in got] == [d[0] for d in want]
        assert all(np.array_equal(d.mask, w[2]) for d, w in zip(got, want))


@pytest.mark.parametrize("k", IMAGES)
def test_detections_equal_inference_detectors(golden, outputs, k):
    """End to end (`GenEvalDetector.detect` on the PNG's pixels): the per-class boxes, scores and masks that mmdet's
    `inference_detector` hands GenEval."""
    assert_same_detections(outputs[f"detections{k}"], golden_detections(golden, "", k))


@pytest.mark.parametrize("k", IMAGES)
def test_postprocessing_equals_mmdets_on_varied_logits(golden, cfg, k):
    """Upsampling, padding crop, resize to the image, top-100 (query, class), mask scores, mask boxes (empty masks
    included), per-class split: mmdet's chain on logits with many classes and mask shapes."""
    image = golden[f"image{k}"]
    x, resized = gd.preprocess(Image.fromarray(image), cfg)
    cls, masks = synthetic_logits(k, tuple(int(n) for n in golden[f"masks{k}.9.shape"][-2:]))
    expected = golden_detections(golden, "synthetic_", k)
    assert len(expected) > 20 and any(box == (0.0, 0.0, 0.0, 0.0) for dets in expected.values() for box, _, _ in dets)
    ours = gd.to_detections(*gd.postprocess(cls, masks, tuple(x.shape[-2:]), resized, image.shape[:2]))
    assert_same_detections(ours, expected)
