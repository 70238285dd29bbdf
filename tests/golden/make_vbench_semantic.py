"""Golden outputs of VBench's appearance-style dimension, from VBench's own code and OpenAI's CLIP on seeded weights.

Upstream: Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53 (`vbench/appearance_style.py`
`appearance_style`, `vbench/utils.py` `load_video`, `clip_transform_Image`) with openai/CLIP@d05afc4 (`clip/model.py`
`build_model`, `CLIP.forward`; `clip/clip.py` `tokenize`), the package VBench imports as `clip`. Run against the two:

    python tests/golden/make_vbench_semantic.py /path/to/VBench /path/to/CLIP

The network: the small CLIP of `make_vbench.small_clip_state` (OpenAI's parameter names; 224 px, patch 32, width
64, one layer, 512-d embedding; seed 97, which also fills `logit_scale`), built by OpenAI's `build_model` and cast
to float32, as `clip.load` does on a CPU. Videos: the three 6-frame 40 x 72 GIFs of `make_vbench.make_videos` and a
2-frame 250 x 300 GIF (downsampled to 224: PIL's antialiasing bicubic path), split over two prompts with two
styles, as VBench's `load_dimension_info` hands them to `appearance_style`. Recorded: the decoded frames, the
per-frame, per-video and overall scores, and OpenAI's `clip.tokenize` of every appearance-style text of
`tests/data/VBench_full_info.json` (VBench's prompt suite at the same commit), to compare with open_clip's.
Stubbed, import-only: `decord` (imported by `vbench.utils` for .mp4, not used for .gif).
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import seeded_fill  # noqa: E402, F401  (small_clip_state seeds with it)
from make_vbench import make_videos, small_clip_state  # noqa: E402

UPSTREAM = ("Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53 + "
            "openai/CLIP@d05afc436d78f1c48dc0dbf8e5980a9d471f35f6")
OUT = Path(__file__).parent / "vbench_semantic"
FULL_INFO = Path(__file__).parent.parent / "data" / "VBench_full_info.json"
STYLES = ("Van Gogh style", "black and white")


def make_large_gif(folder: Path) -> tuple[str, np.ndarray]:
    yy, xx = np.mgrid[0:250, 0:300]
    frames = [np.stack([np.sin((xx + 9 * i) / 7) * 100 + 128, np.cos(yy / 5 - i) * 90 + 128, (xx // 2 + yy) % 256],
                       -1).astype(np.uint8) for i in range(2)]
    gif = folder / "large.gif"
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(frames[1])], duration=125)
    return str(gif), np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(gif))])


def main(vbench: Path, clip_repo: Path) -> None:
    sys.modules["decord"] = types.ModuleType("decord")
    sys.modules["decord"].VideoReader = sys.modules["decord"].cpu = None
    sys.path[:0] = [str(clip_repo), str(vbench)]
    import clip
    from vbench import appearance_style

    assert Path(clip.__file__).parent.parent == clip_repo, clip.__file__
    model = clip.model.build_model(small_clip_state(512, 97)).float().eval()  # `clip.load` on a CPU
    records = [r for r in json.loads(FULL_INFO.read_text(encoding="utf-8")) if "appearance_style" in r["dimension"]]
    texts = [r["auxiliary_info"]["appearance_style"]["appearance_style"] for r in records]
    tokens = clip.tokenize(texts).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        gifs, _, gif_frames, _ = make_videos(Path(tmp))
        large, large_frames = make_large_gif(Path(tmp))
        video_dict = [{"prompt": "p0", "video_list": gifs[:2], "auxiliary_info": {"appearance_style": STYLES[0]}},
                      {"prompt": "p1", "video_list": [gifs[2], large],
                       "auxiliary_info": {"appearance_style": STYLES[1]}}]
        score, per_video = appearance_style.appearance_style(model, video_dict, "cpu")

    OUT.mkdir(exist_ok=True)
    np.savez_compressed(
        OUT / "golden.npz", upstream=np.array(UPSTREAM), gif_frames=gif_frames, large_frames=large_frames,
        styles=np.array(STYLES), style_texts=np.array(texts), style_tokens=tokens.astype(np.int32),
        logit_scale=model.logit_scale.detach().numpy(), appearance_style=np.array(score),
        per_video=np.array([r["video_results"] for r in per_video]),
        per_frame=np.concatenate([r["frame_results"] for r in per_video]))
    print(f"appearance_style {score}\nper video {[r['video_results'] for r in per_video]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
