"""Golden colour logits of GenEval's `color_classification` (CLIP zero-shot over masked box crops).

Upstream: djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f (`evaluation/evaluate_images.py`:
`ImageCrops`, `color_classification`) with LAION-AI/CLIP_benchmark@48de38c1689fa6d8b4dd53e3370c669c3bb18117
(`clip_benchmark/metrics/zeroshot_classification.py`: `zero_shot_classifier`, `run_classification`). Run against
both checkouts:

    python tests/golden/make_clip_color.py /path/to/geneval /path/to/CLIP_benchmark

The CLIP model is a small one with OpenAI's parameter names (open_clip `CLIP`, 1 layer, width 64, 28 px, the real
tokenizer and 77-token context), weights from `golden_weights.seeded_fill` (seed 80), passed through open_clip's
OpenAI loader (`build_model_from_openai_state_dict`, then float32, as `create_model_and_transforms(...,
pretrained="openai")` on CPU) and open_clip's validation transform, as GenEval builds them. Stubbed: mmdet (not
used here) and sklearn (imported by CLIP_benchmark for its reports only); `torch.cuda.is_available` is patched
while importing (GenEval asserts CUDA). One deviation, said here and in the test: GenEval runs CLIP under
`torch.autocast("cuda")` (CLIP_benchmark's default `amp=True`, float16); on a CPU that would be bfloat16, so the
golden is computed with `amp=False` (float32), which is what ARBench computes.
Recorded: the image, the detections (boxes, masks), the logits for two object classes, and the colours.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import save_golden, seeded_fill  # noqa: E402

UPSTREAM = ("djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f + "
            "LAION-AI/CLIP_benchmark@48de38c1689fa6d8b4dd53e3370c669c3bb18117")
OUT = Path(__file__).parent / "clip_color"
OBJECTS = ["fire hydrant", "car"]


def small_openai_state() -> dict:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    small = CLIP(32, CLIPVisionCfg(layers=1, width=64, patch_size=14, image_size=28),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)
    return dict(seeded_fill(small, 80).state_dict())


def main(geneval: Path, clip_benchmark: Path) -> None:
    import open_clip

    for name in ("sklearn", "sklearn.metrics"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["sklearn.metrics"].classification_report = sys.modules["sklearn.metrics"].balanced_accuracy_score = None
    sys.path.insert(0, str(clip_benchmark))
    from clip_benchmark.metrics import zeroshot_classification as zsc
    from make_geneval import load_evaluate_images

    upstream = load_evaluate_images(geneval, stubs=())
    upstream.zsc = zsc
    zero_shot, run = zsc.zero_shot_classifier, zsc.run_classification
    zsc.zero_shot_classifier = lambda *a, **kw: zero_shot(*a, **{**kw, "amp": False})
    zsc.run_classification = lambda *a, **kw: run(*a, **{**kw, "amp": False})
    recorded = []
    zsc.run_classification = (lambda wrapped: lambda *a, **kw: recorded.append(wrapped(*a, **kw)) or recorded[-1])(
        zsc.run_classification)

    state = small_openai_state()
    model = open_clip.model.build_model_from_openai_state_dict(dict(state)).float().eval()
    upstream.clip_model = model
    upstream.transform = open_clip.image_transform(model.visual.image_size, is_train=False)
    upstream.tokenizer = open_clip.get_tokenizer("ViT-L-14")
    upstream.DEVICE = "cpu"
    upstream.args = types.SimpleNamespace(options={})

    rng = np.random.default_rng(9)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    boxes = np.array([[0, 0, 30, 40, 0.9], [20, 10, 64, 48, 0.8], [5, 5, 25, 20, 0.7]], dtype=np.float32)
    masks = [rng.random((48, 64)) > 0.5, None, np.zeros((48, 64), bool)]
    masks[2][6:15, 8:20] = True
    # mmdet hands GenEval float32 rows; today's PIL refuses an array in `crop` (older PIL took it), so each row
    # goes in as a list of the same float32 values
    objects = [([float(v) for v in box], mask) for box, mask in zip(boxes, masks)]
    out = {"image": np.asarray(image), "boxes": boxes, "mask0": masks[0], "mask2": masks[2]}
    for k, name in enumerate(OBJECTS):
        recorded.clear()
        colors = upstream.color_classification(image, objects, name)
        out[f"logits{k}"] = recorded[0][0].numpy()
        out[f"colors{k}"] = np.array(colors)
    assert np.abs(out["logits0"] - out["logits0"].mean(0)).max() > 0.01, "logits do not depend on the crop"
    save_golden(OUT, UPSTREAM, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
