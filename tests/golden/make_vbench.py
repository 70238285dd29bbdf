"""Golden outputs of VBench's quality dimensions, from VBench's own code on seeded random weights.

Upstream: Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53 (`vbench/temporal_flickering.py` `cal_score`,
`vbench/subject_consistency.py` `subject_consistency`, `vbench/background_consistency.py`
`background_consistency`, `vbench/aesthetic_quality.py` `laion_aesthetic`, `vbench/utils.py` `load_video`,
`dino_transform`, `clip_transform`; `scripts/cal_final_score.py` `get_nomalized_score`, `get_quality_score`) and
facebookresearch/dino@7c446df5b9f45747937fb0d72314eb9f7b66930a (`vision_transformer.py` `VisionTransformer`, the
network `torch.hub.load("facebookresearch/dino:main", "dino_vitb16")` builds), and pyiqa 0.1.16 from PyPI
(`pyiqa-0.1.16-py3-none-any.whl`, unpacked; `archs/musiq_arch.py` and its helpers, what VBench's
`imaging_quality.py` imports). Run against the three:

    python tests/golden/make_vbench.py /path/to/VBench /path/to/dino /path/to/unpacked-wheel/pyiqa

Networks are small, with the released parameter names, filled by `golden_weights.seeded_fill`: DINO's ViT
(patch 16, 224 px position grid, width 64, 2 blocks, 2 heads; seed 91), an open_clip `CLIP` built from OpenAI
names by `build_model_from_openai_state_dict` (224 px, patch 32, width 64, 1 layer, 512-d embedding; seed 92, as
VBench's `clip.load` on CPU: float32), the same with a 768-d embedding for the aesthetic head (seed 93), and the
aesthetic `nn.Linear(768, 1)` (seed 94).

Videos: three 6-frame 40 x 72 clips (smooth patterns that move, plus noise), written as GIFs (VBench's
`load_video` reads .gif with PIL) and as lossless FFV1 .avi files for `cal_score` (cv2); what each reader decoded
is what is stored, so the test feeds ARBench exactly the frames VBench saw. Stubbed, import-only: `decord`
(imported by `vbench.utils` for .mp4, not used for .gif), `easydict` (imported by `dynamic_degree` for
`compute_dynamic_degree`, not called) and `clip` (OpenAI's package, imported by
`background_consistency` and `aesthetic_quality` for `compute_*`, which are not called: the models are passed in).
Recorded: the frames, per-video and overall scores, the quality score of random raw dimension values, RAFT's
per-pair scores and decisions of dynamic degree and the static filter, and one flow (every 4th pixel).
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageSequence

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, seeded_fill  # noqa: E402

UPSTREAM = ("Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53 + "
            "facebookresearch/dino@7c446df5b9f45747937fb0d72314eb9f7b66930a")
OUT = Path(__file__).parent / "vbench"
SHAPE = (3, 6, 40, 72)


def small_clip_state(embed_dim: int, seed: int) -> dict:
    """A small CLIP's state dict with OpenAI's parameter names, seeded."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    small = CLIP(embed_dim, CLIPVisionCfg(layers=1, width=64, patch_size=32, image_size=224),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)
    return dict(seeded_fill(small, seed).state_dict())


def small_clip(embed_dim: int, seed: int):
    import open_clip

    return open_clip.model.build_model_from_openai_state_dict(small_clip_state(embed_dim, seed),
                                                              cast_dtype=None).float().eval()


def make_videos(folder: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    n, t, h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    gifs, avis, gif_frames, avi_frames = [], [], [], []
    for v in range(n):
        frames = []
        for i in range(t):
            base = np.stack([np.sin((xx + 3 * i * (v + 1)) / (5 + v)) * 90 + 128,
                             np.cos((yy - 2 * i) / (4 + v)) * 80 + 120,
                             (xx * yy / 12 + 20 * i) % 256], axis=-1)
            frames.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
        gif = folder / f"video-{v}.gif"
        Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                        duration=125, loop=0)
        gif_frames.append(np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(gif))]))
        avi = folder / f"video-{v}.avi"
        writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"FFV1"), 8, (w, h))
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
        capture, decoded = cv2.VideoCapture(str(avi)), []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
        assert len(decoded) == t, f"{avi} decoded to {len(decoded)} frames"
        gifs.append(str(gif))
        avis.append(str(avi))
        avi_frames.append(np.stack(decoded))
    return gifs, avis, np.stack(gif_frames), np.stack(avi_frames)


def make_motion_video(folder: Path) -> tuple[str, np.ndarray]:
    """A 7-frame 124 x 150 clip at 16 fps (VBench's dynamic degree then keeps every 2nd frame; padded to 128 x 152,
    the smallest that torchvision's RAFT takes and whose coarsest correlation level is wider than 1 px, where the
    vendored RAFT's `bilinear_sampler` divides by W - 1), written as lossless H.264 RGB; returns the path and the
    frames as OpenCV decodes them (RGB)."""
    import av

    rng = np.random.default_rng(33)
    yy, xx = np.mgrid[0:124, 0:150]
    frames = [np.clip(np.stack([np.sin((xx - 4 * i) / 6) * 100 + 128, np.cos((yy + 3 * i) / 5) * 90 + 128,
                                ((xx + yy + 5 * i) % 40) * 6], -1) + rng.normal(0, 2, (124, 150, 3)), 0, 255
                       ).astype(np.uint8) for i in range(7)]
    path = folder / "motion.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb", rate=16)
        stream.width, stream.height, stream.pix_fmt = 150, 124, "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    capture, decoded = cv2.VideoCapture(str(path)), []
    assert capture.get(cv2.CAP_PROP_FPS) == 16
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return str(path), np.stack(decoded)


def raft_goldens(vbench: Path, folder: Path) -> dict:
    """VBench's `DynamicDegree.infer` and `StaticFilter.infer` with a seeded RAFT (seed 95), their per-pair
    scores (recorded by wrapping `check_move` / `check_static`), and one raw upsampled flow."""
    sys.modules["easydict"] = types.ModuleType("easydict")
    sys.modules["easydict"].EasyDict = dict
    from vbench import dynamic_degree
    from vbench.third_party.RAFT.core.raft import RAFT
    from vbench.third_party.RAFT.core.utils_core.utils import InputPadder

    sys.path.insert(0, str(vbench))
    import static_filter

    static_filter.DEVICE = "cpu"  # a module constant ('cuda') its get_frames uses

    class Args(dict):
        __getattr__ = dict.__getitem__

        def __setattr__(self, key, value):
            self[key] = value

    raft = seeded_fill(RAFT(Args(small=False, mixed_precision=False, alternate_corr=False)), 95)
    path, frames = make_motion_video(folder)
    recorded = {}

    dynamic = object.__new__(dynamic_degree.DynamicDegree)
    dynamic.model, dynamic.device = raft, "cpu"
    check_move = dynamic.check_move
    dynamic.check_move = lambda scores: recorded.setdefault("dynamic_scores", list(scores)) and check_move(scores)
    recorded["dynamic"] = dynamic.infer(path)

    static = object.__new__(static_filter.StaticFilter)
    static.model, static.device = raft, "cpu"
    check_static = static.check_static
    static.check_static = lambda scores: recorded.setdefault("static_scores", list(scores)) and check_static(scores)
    recorded["static"] = static.infer(path)

    with torch.no_grad():  # the first pair dynamic degree compares (frames 0 and 2), as its `infer` feeds it
        pair = [torch.from_numpy(f).permute(2, 0, 1).float()[None] for f in frames[[0, 2]]]
        padded = InputPadder(pair[0].shape).pad(*pair)
        _, flow = raft(padded[0], padded[1], iters=20, test_mode=True)
    return dict(motion_frames=frames, raft_layout=np.array(layout(raft)), flow02_every4=flow[0, :, ::4, ::4].numpy(),
                dynamic_scores=np.array(recorded["dynamic_scores"]), dynamic=np.array(recorded["dynamic"]),
                static_scores=np.array(recorded["static_scores"]), static=np.array(recorded["static"]))


def load_pyiqa_musiq(pyiqa: Path):
    """pyiqa's `archs/musiq_arch.py` with its real helpers (`arch_util`, `matlab_utils/padding.py`,
    `data/multiscale_trans_util.py`, `utils/registry.py`), without pyiqa's package `__init__`s (which import every
    metric); `pyiqa.utils.download_util` is stubbed (import-only: it downloads checkpoints)."""
    def load(name: str, file: Path):
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    for name in ("pyiqa", "pyiqa.archs", "pyiqa.utils", "pyiqa.data"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__path__ = []
    sys.modules["pyiqa.utils.download_util"] = types.ModuleType("pyiqa.utils.download_util")
    sys.modules["pyiqa.utils.download_util"].load_file_from_url = None
    load("pyiqa.utils.registry", pyiqa / "utils" / "registry.py")
    load("pyiqa.archs.constants", pyiqa / "archs" / "constants.py")
    load("pyiqa.archs.arch_util", pyiqa / "archs" / "arch_util.py")
    sys.modules["pyiqa.matlab_utils"] = load("pyiqa.matlab_utils.padding", pyiqa / "matlab_utils" / "padding.py")
    load("pyiqa.data.multiscale_trans_util", pyiqa / "data" / "multiscale_trans_util.py")
    return load("pyiqa.archs.musiq_arch", pyiqa / "archs" / "musiq_arch.py")


def musiq_goldens(pyiqa: Path, folder: Path) -> dict:
    """VBench's `technical_quality` (imaging quality) with pyiqa's MUSIQ (small: width 64, 2 layers, 2 heads;
    seed 96) on a 2-frame 80 x 530 GIF (longer side over 512: VBench resizes it to 77 x 512 first)."""
    musiq_arch = load_pyiqa_musiq(pyiqa)
    from vbench import imaging_quality

    model = musiq_arch.MUSIQ(hidden_size=64, mlp_dim=128, num_heads=2, num_layers=2, pretrained=False)
    seeded_fill(model, 96)
    model.training = False  # what VBench does (`compute_imaging_quality`); submodules keep their flag
    yy, xx = np.mgrid[0:80, 0:530]
    frames = [np.stack([np.sin((xx + 7 * i) / 9) * 100 + 128, np.cos(yy / 6 + i) * 90 + 128, (xx // 3 + yy) % 256],
                       -1).astype(np.uint8) for i in range(2)]
    gif = folder / "wide.gif"
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(frames[1])], duration=125)
    decoded = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(gif))])
    score, per_video = imaging_quality.technical_quality(model, [str(gif)], "cpu")
    return dict(musiq_frames=decoded, musiq_layout=np.array(layout(model)), musiq=np.array(score),
                musiq_per_video=np.array([r["video_results"] for r in per_video]))


def main(vbench: Path, dino: Path, pyiqa: Path) -> None:
    for name in ("decord", "clip"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["decord"].VideoReader = sys.modules["decord"].cpu = None
    sys.path.insert(0, str(vbench))
    from vbench import aesthetic_quality, background_consistency, subject_consistency, temporal_flickering

    spec = importlib.util.spec_from_file_location("cal_final_score", vbench / "scripts" / "cal_final_score.py")
    final = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(final)
    sys.path.insert(0, str(dino))
    import vision_transformer as dino_vits

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        gifs, avis, gif_frames, avi_frames = make_videos(Path(tmp))
        flicker = [temporal_flickering.cal_score(p) for p in avis]

        dino_model = seeded_fill(dino_vits.VisionTransformer(  # dino_vitb16's arguments, smaller
            patch_size=16, num_classes=0, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)), 91)
        subject, subject_per_video = subject_consistency.subject_consistency(dino_model, gifs, "cpu", False)

        clip_b = small_clip(512, 92)
        background, background_per_video = background_consistency.background_consistency(clip_b, None, gifs, "cpu",
                                                                                         False)
        clip_l = small_clip(768, 93)
        head = seeded_fill(torch.nn.Linear(768, 1), 94)
        aesthetic, aesthetic_per_video = aesthetic_quality.laion_aesthetic(head, clip_l, gifs, "cpu")
        raft = raft_goldens(vbench, Path(tmp))
        musiq = musiq_goldens(pyiqa, Path(tmp))

    rng = np.random.default_rng(5)
    raw = {key: float(rng.uniform(0.3, 1.0)) for key in final.TASK_INFO}
    quality = final.get_quality_score(final.get_nomalized_score(raw))

    OUT.mkdir(exist_ok=True)
    np.savez_compressed(
        OUT / "golden.npz", upstream=np.array(UPSTREAM),
        gif_frames=gif_frames, avi_frames=avi_frames,
        flicker=np.array(flicker), dino_layout=np.array(layout(dino_model)),
        subject=np.array(subject), subject_per_video=np.array([r["video_results"] for r in subject_per_video]),
        background=np.array(background),
        background_per_video=np.array([r["video_results"] for r in background_per_video]),
        aesthetic=np.array(aesthetic), aesthetic_per_video=np.array([r["video_results"] for r in aesthetic_per_video]),
        raw_names=np.array(list(raw)), raw_values=np.array(list(raw.values())), quality=np.array(quality), **raft, **musiq)
    print(f"musiq {musiq['musiq_per_video']}")
    print(f"dynamic {raft['dynamic']} {raft['dynamic_scores']}\nstatic {raft['static']} {raft['static_scores']}")
    print(f"flicker {flicker}\nsubject {subject}\nbackground {background}\naesthetic {aesthetic}\nquality {quality}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
