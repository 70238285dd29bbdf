"""Golden outputs of VBench's temporal style and overall consistency (ViCLIP), from VBench's own code on seeded weights.

Upstream: Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53 (`vbench/temporal_style.py` `temporal_style`,
`vbench/overall_consistency.py` `overall_consistency`, `vbench/utils.py` `read_frames_decord_by_fps`,
`get_frame_indices`, `clip_transform`; `vbench/third_party/ViCLIP/`: `viclip.py` `ViCLIP.encode_vision` /
`encode_text`, `viclip_vision.py` `VisionTransformer`, `viclip_text.py` `CLIP_TEXT`, `simple_tokenizer.py`), with
OpenAI's BPE file from openai/CLIP@d05afc4 (the file VBench downloads). Run against the two:

    python tests/golden/make_viclip.py /path/to/VBench /path/to/CLIP

The network: upstream's classes at a small size with the release's parameter names (vision: 224 px, patch 14,
8 frames, width 64, 2 layers, 2 heads, 32-d output; text: 32 tokens, width 64, 2 layers, 2 heads, 32-d output;
seed 98), assembled as `ViCLIP` holds them (`ViCLIP.__init__` builds the full L/14 and loads a file, so the small
encoders are set on an uninitialised instance). Videos: the three 6-frame 40 x 72 clips of
`make_vbench.make_videos` (fewer than 8 frames: padded with the last) and a 17-frame 60 x 50 clip (portrait: the
crop cuts the height), handed to upstream's `read_frames_decord_by_fps` by a stand-in for decord's `VideoReader`
(`len`, `get_avg_fps`, `get_batch` on the stored uint8 frames: the sampling and transforms are upstream's). Prompts:
two per dimension, one longer than 32 tokens (truncated). Recorded: frames, per-video scores and each dimension's
mean, and `CLIP_TEXT.tokenize(context_length=32)` of every temporal-style and overall-consistency prompt of
`tests/data/VBench_full_info.json`, to compare with open_clip's. Stubbed: `clip` (imported, unused) and
`pkg_resources` (its `packaging` attribute is the `packaging` package it re-exports).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, seeded_fill  # noqa: E402
from make_vbench import make_videos  # noqa: E402

UPSTREAM = ("Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53 + "
            "openai/CLIP@d05afc436d78f1c48dc0dbf8e5980a9d471f35f6 (bpe_simple_vocab_16e6.txt.gz)")
OUT = Path(__file__).parent / "viclip"
FULL_INFO = Path(__file__).parent.parent / "data" / "VBench_full_info.json"
PROMPTS = {"temporal_style": ["A cat walking on the grass, camera pans left",
                              "The bund Shanghai, zoom in, with a long descriptive tail that goes on well past the "
                              "thirty-two tokens of ViCLIP's text context, so that truncation is exercised here"],
           "overall_consistency": ["Close up of grapes on a rotating table.",
                                   "A panda drinking coffee in a cafe in Paris, in the style of a watercolor"]}
FRAMES: dict[str, np.ndarray] = {}


class FakeVideoReader:
    """decord's `VideoReader` on stored frames (the torch bridge: `get_batch` returns a uint8 torch tensor)."""

    def __init__(self, path, num_threads=1):
        self.frames = FRAMES[path]

    def __len__(self):
        return len(self.frames)

    def get_avg_fps(self):
        return 8.0

    def get_batch(self, indices):
        return torch.from_numpy(self.frames[list(indices)])


def small_viclip(vbench_viclip):
    from vbench.third_party.ViCLIP.viclip_text import CLIP_TEXT
    from vbench.third_party.ViCLIP.viclip_vision import VisionTransformer

    model = object.__new__(vbench_viclip.ViCLIP)
    torch.nn.Module.__init__(model)
    model.max_txt_l, model.masking_prob = 32, 0.9
    model.vision_encoder = VisionTransformer(input_resolution=224, patch_size=14, width=64, layers=2, heads=2,
                                             output_dim=32, kernel_size=1, num_frames=8)
    model.text_encoder = CLIP_TEXT(32, 32, 49408, 64, 2, 2, 0)
    model.temp = torch.nn.Parameter(torch.ones([]) / 100.0)
    return seeded_fill(model, 98).eval()


def main(vbench: Path, clip_repo: Path) -> None:
    cache = Path(tempfile.mkdtemp())
    (cache / "ViCLIP").mkdir()
    shutil.copyfile(clip_repo / "clip" / "bpe_simple_vocab_16e6.txt.gz", cache / "ViCLIP" / "bpe_simple_vocab_16e6.txt.gz")
    os.environ["VBENCH_CACHE_DIR"] = str(cache)
    decord = types.ModuleType("decord")
    decord.VideoReader, decord.cpu = FakeVideoReader, None
    decord.bridge = types.SimpleNamespace(set_bridge=lambda name: None)
    sys.modules["decord"] = decord
    sys.modules["clip"] = types.ModuleType("clip")  # imported by both modules, not used
    import packaging.version  # what `pkg_resources.packaging` re-exports (setuptools is not in the project's venv)

    sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)
    sys.path.insert(0, str(vbench))
    from vbench import overall_consistency, temporal_style
    from vbench.third_party.ViCLIP import viclip

    model = small_viclip(viclip)
    gifs_dir = Path(tempfile.mkdtemp())
    _, _, gif_frames, _ = make_videos(gifs_dir)
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[0:60, 0:50]
    tall = np.stack([np.clip(np.stack([np.sin((xx + 2 * i) / 4) * 100 + 128, np.cos((yy - i) / 6) * 90 + 120,
                                       (xx * 3 + yy + 9 * i) % 256], -1) + rng.normal(0, 6, (60, 50, 3)), 0, 255)
                     for i in range(17)]).astype(np.uint8)
    videos = [gif_frames[0], gif_frames[1], gif_frames[2], tall]
    for v, frames in enumerate(videos):
        FRAMES[f"video-{v}.mp4"] = frames
    results = {}
    for name, module, function in (("temporal_style", temporal_style, temporal_style.temporal_style),
                                   ("overall_consistency", overall_consistency, overall_consistency.overall_consistency)):
        video_dict = [{"prompt": PROMPTS[name][0], "video_list": ["video-0.mp4", "video-3.mp4"]},
                      {"prompt": PROMPTS[name][1], "video_list": ["video-1.mp4", "video-2.mp4"]}]
        score, per_video = function(model, video_dict, None, "cpu")
        results[name] = np.array(score)
        results[f"{name}_per_video"] = np.array([r["video_results"] for r in per_video])
    records = json.loads(FULL_INFO.read_text(encoding="utf-8"))
    texts = [r["prompt_en"] for r in records if {"temporal_style", "overall_consistency"} & set(r["dimension"])]
    texts += PROMPTS["temporal_style"][1:]
    tokens = model.text_encoder.tokenize(texts, context_length=32).numpy()

    OUT.mkdir(exist_ok=True)
    np.savez_compressed(OUT / "golden.npz", upstream=np.array(UPSTREAM), layout=np.array(layout(model)),
                        gif_frames=gif_frames, tall_frames=tall, texts=np.array(texts), tokens=tokens.astype(np.int32),
                        prompts_temporal_style=np.array(PROMPTS["temporal_style"]),
                        prompts_overall_consistency=np.array(PROMPTS["overall_consistency"]), **results)
    shutil.rmtree(cache)
    shutil.rmtree(gifs_dir)
    print({k: v for k, v in results.items()}, len(texts))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
