"""Golden outputs of VBench's motion smoothness (AMT-S), from VBench's own code on seeded random weights.

Upstream: Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53: `vbench/motion_smoothness.py`
(`MotionSmoothness`: `load_model` from `vbench/third_party/amt/cfgs/AMT-S.yaml` through `build_from_cfg`,
`motion_score`, `vfi_score`; `motion_smoothness`) and its vendored MCG-NKU/AMT (`networks/AMT-S.py` and blocks,
`utils/utils.py`, `utils/flow_utils.py`). Run against a checkout (needs omegaconf and imageio, which the vendored
`utils/utils.py` imports, besides cv2 and torch):

    python tests/golden/make_amt.py /path/to/VBench

Weights: AMT-S at its released size (cfg as given), filled by `golden_weights.seeded_fill` (seed 97; the output heads
in `DAMPED` then scaled by 0.1 with `golden_weights.damp`), saved as a
training checkpoint in the released layout (`{"epoch", "state_dict", "optim"}`, an AdamW state as AMT's trainer
writes) and read back by VBench's own `load_model` (`torch.load(weights_only=False)`); the test rebuilds the same
file and reads it through `harness.features.amt.load_amt_s` (`weights_only=True`).

Videos (`synthetic_frames`, integer arithmetic; written as lossless H.264 RGB mp4 and decoded by VBench's
`get_frames` with cv2, which must give the same bytes; their sha256 is stored):
A 7 frames of 124 x 150 (padded to 128 x 160), B 6 frames of 130 x 146 (an even count: the last odd frame has no
interpolated partner), C 5 frames of 250 x 300 scored as on a GPU whose memory makes VBench shrink the frames:
`initialization`'s CUDA constants with a total memory of 2500 MiB + 1.8 MiB give scale 0.5 (padding to a multiple
of 32, AMT-S at half size). Recorded: per-video scores and their mean (VBench's `motion_smoothness`), each
compared frame's mean absolute difference (`get_diff`, wrapped), A's uint8 interpolated frames (`motion_score`'s
outputs, recorded by wrapping `vfi_score`; every 2nd pixel), and for
the first pair of A the float `imgt_pred` (every 4th pixel) and the full-size flows (`eval=False`, every 4th pixel). Nothing is
stubbed but `decord` (imported by `vbench.utils` for decoding other dimensions' videos; not called).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import types
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import damp, layout, seeded_fill  # noqa: E402

UPSTREAM = "Vchitect/VBench@45e79ec14e69a2187202c675d2dbce1a71843d53"
OUT = Path(__file__).parent / "amt"
SEED = 97
#: output heads damped after seeding (by `DAMPING`), so that the random network's frame is not clamped to 0 or 1
#: almost everywhere: the last layers of the finest decoder (flows, masks, residuals) and of the combining block
DAMPED, DAMPING = ("decoder1.convblock.2.", "comb_block.2."), 0.1
#: name, frames, height, width, simulated GPU memory (bytes; None: VBench on a CPU)
VIDEOS = (("a", 7, 124, 150, None), ("b", 6, 130, 146, None), ("c", 5, 250, 300, 2500 * 1024 ** 2 + 1887436))


def synthetic_frames(n: int, h: int, w: int) -> np.ndarray:
    """``[n, h, w, 3]`` uint8 frames from integer arithmetic only (the same bytes on every machine, so the test
    rebuilds them instead of storing them): a blob that moves non-linearly, shifting stripes and diagonals, and a
    fixed texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.int64)
    r2, texture = (min(h, w) // 4) ** 2, (xx * yy * 13 % 7) * 3
    frames = []
    for i in range(n):
        cx, cy = w * 3 // 10 + 4 * i + i * i, h // 2 + (3 if i % 2 else -3)
        blob = np.maximum(0, 200 - ((xx - cx) ** 2 + (yy - cy) ** 2) * 200 // r2)
        frame = np.stack([blob + 20 + texture, np.abs((yy - 2 * i) * 5 % 200 - 100) + 60 + texture,
                          (xx + yy + 4 * i) % 64 * 3 + texture], -1)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_and_decode(path: Path, frames: np.ndarray) -> np.ndarray:
    """Write the frames as lossless H.264 RGB at 8 fps; return them as VBench's `FrameProcess.get_frames`
    decodes them (cv2, BGR -> RGB)."""
    import av

    _, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb", rate=8)
        stream.width, stream.height, stream.pix_fmt = w, h, "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    capture, decoded = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return np.stack(decoded)


def main(vbench: Path) -> None:
    sys.modules["decord"] = types.ModuleType("decord")
    sys.modules["decord"].VideoReader = sys.modules["decord"].cpu = None
    sys.path.insert(0, str(vbench))
    from vbench import motion_smoothness as ms
    from vbench.third_party.amt.utils.build_utils import build_from_cfg
    from omegaconf import OmegaConf

    cfg = vbench / "vbench" / "third_party" / "amt" / "cfgs" / "AMT-S.yaml"
    torch.set_num_threads(1)  # 2 threads on a loaded 2-core machine are 10x slower
    model = damp(seeded_fill(build_from_cfg(OmegaConf.load(cfg).network), SEED), DAMPED, DAMPING)
    out: dict[str, np.ndarray] = {"upstream": np.array(UPSTREAM), "amt_layout": np.array(layout(model))}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "amt-s.pth"
        optim = torch.optim.AdamW(model.parameters(), lr=2e-4)
        torch.save({"epoch": 299, "state_dict": model.state_dict(), "optim": optim.state_dict()}, ckpt)
        scores, means = [], []
        for name, n, h, w, memory in VIDEOS:
            path = Path(tmp) / f"{name}.mp4"
            frames = write_and_decode(path, synthetic_frames(n, h, w))
            assert np.array_equal(frames, synthetic_frames(n, h, w)), f"{path} did not decode losslessly"
            motion = ms.MotionSmoothness(str(cfg), str(ckpt), "cpu")  # VBench's own load_model
            if memory is not None:  # `initialization`'s CUDA branch, with this total memory
                motion.anchor_resolution, motion.anchor_memory = 1024 * 512, 1500 * 1024 ** 2
                motion.anchor_memory_bias, motion.vram_avail = 2500 * 1024 ** 2, memory
            recorded, get_diff = {"diffs": []}, motion.get_diff
            vfi_score = motion.vfi_score
            motion.vfi_score = lambda ori, inter: recorded.setdefault("outputs", inter) and vfi_score(ori, inter)
            motion.get_diff = lambda a, b: recorded["diffs"].append(get_diff(a, b)) or recorded["diffs"][-1]
            mean, per_video = ms.motion_smoothness(motion, [str(path)])
            scores.append(per_video[0]["video_results"])
            means.append(mean)
            out[f"frames_sha256_{name}"] = np.array(hashlib.sha256(frames.tobytes()).hexdigest())
            out[f"diffs_{name}"] = np.array(recorded["diffs"])
            out[f"memory_{name}"] = np.array(-1 if memory is None else memory, dtype=np.int64)
            if name == "a":
                out["interpolated_a_every2"] = np.stack(recorded["outputs"][1::2])[:, ::2, ::2]
            if name == "a":
                x = [torch.from_numpy(f).permute(2, 0, 1)[None] / 255.0 for f in frames[[0, 2]]]
                padder = ms.InputPadder(x[0].shape, 16)
                x = padder.pad(*x)
                with torch.no_grad():
                    res = motion.model(x[0], x[1], motion.embt, scale_factor=1.0, eval=False)
                out["imgt_a01_every4"] = res["imgt_pred"][0, :, ::4, ::4].numpy()
                out["flow0_a01_every4"] = res["flow0_pred"][0][0, :, :, ::4, ::4].numpy()
                out["flow1_a01_every4"] = res["flow1_pred"][0][0, :, :, ::4, ::4].numpy()
    out["scores"], out["means"] = np.array(scores), np.array(means)
    OUT.mkdir(exist_ok=True)
    np.savez_compressed(OUT / "golden.npz", **out)
    imgt = res["imgt_pred"].numpy()
    print(f"scores {scores}\nimgt range {imgt.min():.3f}..{imgt.max():.3f}, clamped fraction "
          f"{float(((imgt == 0) | (imgt == 1)).mean()):.3f}; flow0 |max| {np.abs(out['flow0_a01_every4']).max():.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
