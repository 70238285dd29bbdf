"""Golden CLIP scores of ControlAR's `evaluations/t2i/evaluation.py` (`EvalDataset` + `compute_clip_score`).

Upstream: hustvl/ControlAR@87e32e97416277fcecf9c03a998263399a4af331 (`evaluations/t2i/evaluation.py`, from GigaGAN)
with openai/CLIP@d05afc436d78f1c48dc0dbf8e5980a9d471f35f6 (the `clip` package it imports). Run against both
checkouts:

    python tests/golden/make_controlar_clipscore.py /path/to/ControlAR /path/to/CLIP

The CLIP model is make_clip_color.py's small one with OpenAI's parameter names (seeded weights, seed 80, 28 px),
built by OpenAI's own `clip.model.build_model` and preprocessed by OpenAI's `clip._transform`: `clip.load` is
patched to return them (it would download ViT-B/32). Everything else is upstream's code: the images and captions go
through `EvalDataset("coco2014", ..., load_txt_from_file=True)` (its folder layout: `images/*.png` and
`captions.txt`) at `eval_res` 256 with Lanczos, a DataLoader of batch 2, and `compute_clip_score(...,
clip_model="ViT-B/32", device="cpu")`. Recorded: the images (as their 16 x 16 seeds and sizes), captions (one longer than 77 tokens), per-image
cosines (captured from `F.cosine_similarity`) and the mean.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import save_golden  # noqa: E402
from make_clip_color import small_openai_state  # noqa: E402

UPSTREAM = ("hustvl/ControlAR@87e32e97416277fcecf9c03a998263399a4af331 + "
            "openai/CLIP@d05afc436d78f1c48dc0dbf8e5980a9d471f35f6")
OUT = Path(__file__).parent / "controlar_clipscore"
CAPTIONS = ["a red car parked on a street", "two dogs playing in the snow near a wooden fence",
            " ".join(["a very long caption about a landscape with mountains rivers and trees"] * 8),
            "a bowl of fruit"]
SIZES = [(512, 512), (300, 200), (512, 512), (512, 512)]  # (width, height): the generated size, and one not square


def expand(small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A smooth test image from 16 x 16 random pixels (stored small; the test rebuilds it the same way)."""
    return np.asarray(Image.fromarray(small).resize(tuple(int(v) for v in size), Image.BILINEAR))


def main(controlar: Path, clip_repo: Path) -> None:
    sys.path.insert(0, str(clip_repo))
    import clip as openai_clip

    state = small_openai_state()
    model = openai_clip.model.build_model(dict(state)).float().eval()
    preprocess = openai_clip.clip._transform(model.visual.input_resolution)
    openai_clip.load = lambda name, device="cpu": (model, preprocess)

    spec = importlib.util.spec_from_file_location("controlar_eval", controlar / "evaluations/t2i/evaluation.py")
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    cosines = []
    cosine = upstream.F.cosine_similarity
    upstream.F = type("F", (), {"cosine_similarity": staticmethod(
        lambda *a, **kw: cosines.append(cosine(*a, **kw)) or cosines[-1])})

    rng = np.random.default_rng(20)
    smalls = rng.integers(0, 256, (len(CAPTIONS), 16, 16, 3), dtype=np.uint8)
    images = [expand(small, SIZES[k]) for k, small in enumerate(smalls)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for k, image in enumerate(images):
            Image.fromarray(image).save(root / "images" / f"{k:06d}.png")
        (root / "captions.txt").write_text("\n".join(CAPTIONS), encoding="utf-8")
        dataset = upstream.EvalDataset(data_name="coco2014", data_dir=str(root), data_type="images",
                                       crop_long_edge=True, resize_size=256, resizer="lanczos", normalize=True,
                                       load_txt_from_file=True)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False)
        score = upstream.compute_clip_score(loader, clip_model="ViT-B/32", device="cpu", how_many=len(CAPTIONS))
    per_image = torch.cat(cosines).numpy()
    assert per_image.std() > 1e-3, "scores do not depend on the input"
    out = dict(smalls=smalls, sizes=np.array(SIZES), captions=np.array(CAPTIONS), cosines=per_image, score=np.float64(score))
    save_golden(OUT, UPSTREAM, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
