"""Golden verdicts of GenEval's rule engine (upstream `evaluate_images.py`) on synthetic detections.

Upstream: djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f (`evaluation/evaluate_images.py`).
Run against a checkout (nothing of it is copied here):

    python tests/golden/make_geneval.py /path/to/geneval

The module imports mmdet, open_clip and clip_benchmark at import time and asserts CUDA: those modules are
stubbed (empty namespaces; `torch.cuda.is_available` is patched to True while importing), and the detector is
replaced by `inference_detector` returning the synthetic result, so upstream's own `evaluate_image` runs: its
score ordering, float32 threshold, max-objects cut, greedy NMS loop, `evaluate`, and `relative_position`.
`color_classification` (CLIP) is replaced by a rule both sides share: colour = COLORS[int(x1) % 10].
Options are upstream's defaults (threshold 0.3, counting 0.9, max 16 objects, max_overlap 1.0, margin 0.1).

For 600 (image, prompt) cases drawn over the official prompt metadata (tests/data/geneval_evaluation_metadata.jsonl),
the detections are mmdet-style float32 (n, 5) arrays per class, with scores drawn from a small set
(0.3, 0.9 exactly in float32, ties) and boxes on a coarse grid so that positional ties and margins occur.
Upstream joins a *set* of relations into a position reason, so their order there follows Python's string hashing
(run with PYTHONHASHSEED=0 for a byte-identical file); the test compares those relations as sets.
Writes tests/golden/geneval/cases.json: inputs (the metadata line number and the detections), and upstream's `correct`, `reason` and kept `details`.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

UPSTREAM = "djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f"
ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "geneval" / "cases.json"
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
SCORES = np.array([0.3, 0.9, 0.95, 0.5, 0.5, 0.31, 0.2, 0.91, 0.95, 0.7], dtype=np.float32)
N_CASES = 600


def color_rule(box) -> str:
    return COLORS[int(box[0]) % 10]


def load_evaluate_images(checkout: Path, stubs: tuple[str, ...] = ("open_clip", "clip_benchmark")):
    """GenEval's evaluate_images module, importable without a GPU: mmdet (and `stubs`) replaced by empty modules,
    `torch.cuda.is_available` patched to True while it imports (it asserts CUDA at import time)."""
    import torch

    for name in ("mmdet", "mmdet.apis"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["mmdet.apis"].inference_detector = sys.modules["mmdet.apis"].init_detector = None
    if "open_clip" in stubs:
        sys.modules["open_clip"] = types.ModuleType("open_clip")
    if "clip_benchmark" in stubs:
        for name in ("clip_benchmark", "clip_benchmark.metrics", "clip_benchmark.metrics.zeroshot_classification"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["clip_benchmark.metrics"].zeroshot_classification = sys.modules[name]
    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        sys.path.insert(0, str(checkout / "evaluation"))
        import evaluate_images
    finally:
        torch.cuda.is_available = available
    return evaluate_images


def import_upstream(checkout: Path):
    upstream = load_evaluate_images(checkout)
    upstream.THRESHOLD, upstream.COUNTING_THRESHOLD, upstream.MAX_OBJECTS = 0.3, 0.9, 16
    upstream.NMS_THRESHOLD, upstream.POSITION_THRESHOLD = 1.0, 0.1
    upstream.classnames = [line.strip() for line in (checkout / "evaluation" / "object_names.txt").open()]
    upstream.color_classification = lambda image, objects, classname: [color_rule(box) for box, _ in objects]
    return upstream


def synthetic(rng: np.random.Generator, record: dict, classnames: list[str]) -> dict[str, list[list[float]]]:
    names = [c["class"] for c in record.get("include", [])] + list(rng.choice(classnames, 2))
    detections = {}
    for name in names:
        n = int(rng.integers(0, 6))
        scores = rng.choice(SCORES, n)
        x1 = rng.integers(0, 8, n) * 64 + rng.choice([0, 1, 2, 3], n)
        y1 = rng.integers(0, 8, n) * 64
        w, h = rng.choice([20, 64, 128], n), rng.choice([20, 64, 128], n)
        rows = np.stack([x1, y1, x1 + w, y1 + h, scores], 1).astype(np.float32)
        detections[name] = short(rows)
    return detections


def short(rows) -> list[list[float]]:
    """float32 values as their shortest decimal (reads back to the same float32)."""
    return [[float(str(np.float32(v))) for v in row] for row in rows]


def main(checkout: Path) -> None:
    upstream = import_upstream(checkout)
    records = [json.loads(line) for line in (ROOT / "data" / "geneval_evaluation_metadata.jsonl").open()]
    rng = np.random.default_rng(16)
    image_path = Path("/tmp/geneval-golden.png")
    Image.new("RGB", (512, 512)).save(image_path)
    cases = []
    for k in range(N_CASES):
        record = records[k % len(records)]
        dets = synthetic(rng, record, upstream.classnames)
        bbox = [np.array(dets.get(name, []), dtype=np.float32).reshape(-1, 5) for name in upstream.classnames]
        upstream.object_detector = None
        upstream.inference_detector = lambda detector, path, bbox=bbox: bbox
        result = upstream.evaluate_image(str(image_path), record)
        cases.append({"record": k % len(records), "detections": dets, "correct": bool(result["correct"]),
                      "reason": result["reason"],
                      "details": {name: short(rows) for name, rows in json.loads(result["details"]).items()}})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"upstream": UPSTREAM, "color_rule": "COLORS[int(x1) % 10]", "cases": cases}) + "\n")
    print(f"wrote {OUT}: {sum(c['correct'] for c in cases)} of {len(cases)} correct")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
