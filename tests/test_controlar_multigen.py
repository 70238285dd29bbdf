"""controlar-multigen-{canny,hed,depth}: the controllability metrics against upstream ControlAR's evaluation code
(tests/golden/make_controlar_metrics.py), an offline end-to-end run of a tiny seeded ControlAR through the canny
task, and the refusals of bad data before anything is stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from baselines.imagegen.controlar import dinov2_config
from baselines.imagegen.controlar_methods import CONTROLAR_METHODS
from baselines.imagegen.vq_decoder import VQConfig, VQDecoder
from golden.golden_weights import seeded_state
from golden.make_controlar_metrics import DPT_PROCESSOR, DPT_TINY, SEED, hed_state, images
from harness.errors import ArbenchError, InputError
from harness.features.control_maps import ControlNetHED, DPTDepth, canny
from harness.metrics.controllability import DepthRMSE, EdgeF1, HedSSIM, depth_rmse, edge_f1, ms_ssim
from harness.registry import register_method
from imagegen_fixtures import make_tiny_t5
from test_golden_imagegen import golden
from test_imagegen_controlar import TINY

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def g():
    return golden("controlar_metrics")


@pytest.fixture(scope="module")
def data():
    return images()


# -- the metrics against upstream's evaluation scripts -----------------------------------------------------
def test_canny_f1_matches_upstream(g, data):
    labels = np.stack([canny(img) for img in data["other"]])
    np.testing.assert_array_equal(labels, g["canny_control"])
    ours = [edge_f1(canny(img), label) for img, label in zip(data["generated"], labels)]
    np.testing.assert_allclose(ours, g["canny_f1"], rtol=0, atol=1e-6)  # torchmetrics computes in float32
    assert 0.2 < min(ours) and max(ours) < 0.4  # real overlap, neither 0 nor 1
    # a deliberate break: other thresholds give other edges and another F1
    broken = [edge_f1(canny(img, 50, 200), label) for img, label in zip(data["generated"], labels)]
    assert not np.allclose(broken, g["canny_f1"], atol=1e-6)


def test_hed_and_ms_ssim_match_upstream(g, data):
    model = ControlNetHED()
    model.load_state_dict(hed_state(model.state_dict()))
    x = torch.from_numpy(data["generated"]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        hed = model.eval()(x)
    np.testing.assert_allclose(hed[:, ::4, ::4].numpy(), g["hed_of_generated"], rtol=0, atol=1e-3)
    scores = ms_ssim(hed, torch.from_numpy(data["hed"]))
    np.testing.assert_allclose(scores.numpy(), g["hed_ssim"], rtol=0, atol=1e-5)
    metric = HedSSIM()
    metric.update(scores[:2])
    metric.update(scores[2:])  # any batching: the mean over images (upstream's batch of three is the same here)
    assert metric.values()[0].value == pytest.approx(float(g["hed_ssim_batch"]), abs=1e-5)


def test_hed_break_fails(g, data):
    """Averaging the side outputs after the sigmoid instead of before changes the map."""
    model = ControlNetHED()
    model.load_state_dict(hed_state(model.state_dict()))
    x = torch.from_numpy(data["generated"][:1]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        h = x - model.norm
        sides = []
        for i, block in enumerate((model.block1, model.block2, model.block3, model.block4, model.block5)):
            h, side = block(h, down_sampling=i > 0)
            sides.append(torch.nn.functional.interpolate(side, size=x.shape[2:], mode="bilinear").squeeze(1))
        broken = torch.sigmoid(torch.stack(sides, 1)).mean(1) * 255
    assert not np.allclose(broken[:, ::4, ::4].numpy(), g["hed_of_generated"][:1], atol=1e-3)


def test_dpt_depth_rmse_matches_upstream(g, data, tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    DPTImageProcessor(**DPT_PROCESSOR).save_pretrained(str(tmp_path))
    dpt = DPTForDepthEstimation(DPTConfig(**DPT_TINY))
    dpt.load_state_dict(seeded_state(dpt.state_dict(), SEED))
    dpt.save_pretrained(str(tmp_path), safe_serialization=True)
    depth = DPTDepth(tmp_path)(list(data["generated_512"]))
    np.testing.assert_allclose(depth[:, ::16, ::16].numpy(), g["depth_prediction"], rtol=1e-4, atol=1e-5)
    rmse = depth_rmse(depth, torch.from_numpy(data["depth"]))
    np.testing.assert_allclose(rmse.numpy(), g["depth_rmse"], rtol=1e-4)
    unscaled = ((depth - torch.from_numpy(data["depth"]).float()) ** 2).flatten(1).mean(1).sqrt()
    assert not np.allclose(unscaled.numpy(), g["depth_rmse"], rtol=1e-2)  # the x 255 / max rescale matters
    metric = DepthRMSE()
    metric.update(rmse)
    assert metric.values()[0].value == pytest.approx(float(g["depth_rmse"].mean()), rel=1e-4)
    assert not metric.values()[0].higher_is_better


# -- offline end to end: a tiny seeded ControlAR through controlar-multigen-canny --------------------------
@register_method("controlar-canny-tiny-test")
class TinyControlAR(CONTROLAR_METHODS[0]):
    """controlar-canny with tiny shapes (64 px: 4x4 tokens, a 16x VQ); everything else is the released path."""

    caption_dim = 32
    image_size = 64
    vq_config = VQConfig(codebook_size=64, codebook_embed_dim=8, z_channels=32, ch=32, ch_mult=(1, 1, 1, 1, 1),
                         num_res_blocks=1)

    def gpt_config(self):
        return TINY

    def adapter_config(self):
        return dinov2_config("small", num_hidden_layers=1)


PROMPTS = ["a photo of a dog", "a red car", "two clocks on a table"]


def write_data(folder: Path, n: int = 3) -> None:
    rng = np.random.default_rng(3)
    (folder / "control").mkdir(parents=True)
    (folder / "image").mkdir(parents=True)
    rows = []
    for i in range(n):
        picture = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 64x64 blocks
        Image.fromarray(canny(picture)).save(folder / "control" / f"{i:06d}.png")
        Image.fromarray(picture).save(folder / "image" / f"{i:06d}.png")
        rows.append({"id": f"{i:06d}", "prompt": PROMPTS[i % 3], "control": f"control/{i:06d}.png",
                     "image": f"image/{i:06d}.png"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("controlar")
    make_tiny_t5(root / "t5")
    with torch.device("meta"):
        net = TinyControlAR().build_network()
    save_file({k: v.contiguous() for k, v in seeded_state({k: torch.empty(v.shape) for k, v in net.state_dict().items()},
                                                           SEED).items()}, str(root / "controlar_tiny.safetensors"))
    torch.manual_seed(6)
    torch.save({"model": VQDecoder(TinyControlAR.vq_config).state_dict()}, root / "vq.pt")
    write_data(root / "data")
    return root


def method_settings(root: Path) -> dict:
    return {"gpt_weights": str(root / "controlar_tiny.safetensors"), "vq_weights": str(root / "vq.pt"),
            "t5_dir": str(root / "t5"), "precision": "fp32", "top_k": 8}


def run(task: str, settings: dict, results_dir: Path):
    from harness.runner import Runner, RunOptions
    from harness.store import Store

    runner = Runner(store=Store(f"sqlite:///{results_dir / 'db.sqlite'}"),
                    options=RunOptions(batch_size=2, shard_size=2, device="cpu", progress=False))
    return runner.run(task, "controlar-canny-tiny-test", settings)


def tiny_inception() -> torch.nn.Module:
    """A seeded stand-in for clean-fid's Inception (float NCHW 299 x 299 in 0..255 -> 8 features)."""
    torch.manual_seed(11)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 13, stride=13), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(3),
                               torch.nn.Flatten(), torch.nn.Linear(72, 8)).eval()


def tiny_clip():
    from golden.make_clip_color import small_openai_state
    from harness.features.clip_score import ClipScorer

    return ClipScorer.from_openai_state_dict(small_openai_state())


@pytest.fixture
def tiny_scorers(monkeypatch):
    """The task's FID and CLIP networks replaced by seeded small ones (the real weights cannot be had offline)."""
    import tasks.controlar_multigen as tm

    monkeypatch.setattr(tm, "fid_inception", lambda device: tiny_inception())
    monkeypatch.setattr(tm, "clip_scorer", lambda device: tiny_clip())
    monkeypatch.setattr(tm.ControlARMultiGen, "score_weights", lambda self: [])


def test_offline_run_scores_canny_f1(tiny_files, results_dir, tiny_scorers):
    """`arbench run controlar-multigen-canny` through the real runner: requests with control paths, the tiny
    ControlAR generating 64x64 images in shards, the images read back and scored by the real metric, with
    clean-FID and CLIP score on seeded small networks."""
    result = run("controlar-multigen-canny", {**method_settings(tiny_files), "data": str(tiny_files / "data"),
                                              "image_size": 64, "fid": True, "clip_score": True}, results_dir)
    values = {m.name: m.value for m in result.metrics}
    rows = [json.loads(line) for line in next(results_dir.rglob("per_image.jsonl")).read_text().splitlines()]
    assert [r["id"] for r in rows] == ["000000", "000001", "000002"]
    assert values["canny_f1"] == pytest.approx(np.mean([r["canny_f1"] for r in rows])) and 0 <= values["canny_f1"] <= 1
    assert values["clip_score"] == pytest.approx(np.mean([r["clip_score"] for r in rows]), abs=1e-12)
    assert values["clean_fid"] > 0


def test_fid_and_clip_score_match_clean_fid_and_upstream(tiny_files, tmp_path, tiny_scorers):
    """The task's clean_fid equals clean-fid's own `compute_fid(generated_dir, real_dir)` (mode "clean", as
    ControlAR's evaluations/clean_fid.py calls it) on the same folders with the same feature network, and its
    clip_score is the mean of the per-image CLIP scores (those are checked against upstream below)."""
    from cleanfid import fid as cleanfid

    from harness.registry import TASKS
    from run_context_double import FakeContext

    cls = TASKS.get("controlar-multigen-canny")
    task = cls(cls.Config(data=str(tiny_files / "data"), image_size=64))
    gen = tmp_path / "gen"
    gen.mkdir()
    rng = np.random.default_rng(4)
    for i in range(3):
        Image.fromarray(np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8)).save(
            gen / f"{i:06d}.png")
    values = {m.name: m for m in task.score(task.load_samples(gen), FakeContext(tmp_path))}
    reference = cleanfid.compute_fid(str(gen), str(tiny_files / "data" / "image"), mode="clean",
                                     custom_feat_extractor=tiny_inception(), device=torch.device("cpu"),
                                     num_workers=0, batch_size=2, verbose=False)
    assert values["clean_fid"].value == pytest.approx(reference, rel=1e-5, abs=1e-6)
    assert not values["clean_fid"].higher_is_better and values["clip_score"].higher_is_better
    images = [np.asarray(Image.open(gen / f"{i:06d}.png").convert("RGB")) for i in range(3)]
    direct = tiny_clip()(images, [PROMPTS[i] for i in range(3)])
    assert values["clip_score"].value == pytest.approx(float(direct.double().mean()), abs=1e-7)


def test_clip_score_matches_controlar_evaluation():
    """tests/golden/make_controlar_clipscore.py: upstream's EvalDataset (centre crop, Lanczos 256, tensor round
    trip) and compute_clip_score ("A photo depicts " spliced into OpenAI-tokenised captions, cosine) on a seeded
    small CLIP built by OpenAI's own code; here the same weights through open_clip. Tolerance 1e-5 (float32)."""
    from golden.make_controlar_clipscore import expand

    with np.load(Path(__file__).parent / "golden" / "controlar_clipscore" / "golden.npz") as g:
        smalls, sizes, captions = g["smalls"], g["sizes"], [str(c) for c in g["captions"]]
        cosines, score = g["cosines"], float(g["score"])
    images = [expand(small, size) for small, size in zip(smalls, sizes)]
    got = tiny_clip()(images, captions).numpy()
    np.testing.assert_allclose(got, cosines, atol=1e-5)
    assert float(got.mean()) == pytest.approx(score, abs=1e-5)


def test_missing_score_weights_are_all_named(tiny_files, monkeypatch, tmp_path):
    from harness.errors import MissingAssetError
    from harness.registry import TASKS

    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    cls = TASKS.get("controlar-multigen-hed")
    with pytest.raises(MissingAssetError) as info:
        cls(cls.Config(data=str(tiny_files / "data"), image_size=64)).require_assets()
    for name in ("ControlNetHED.pth", "inception-2015-12-05.pt", "ViT-B-32.pt"):
        assert name in str(info.value)


def test_fid_needs_the_validation_images(tmp_path, results_dir, tiny_files):
    def drop_image(d):
        rows = [json.loads(line) for line in (d / "metadata.jsonl").read_text().splitlines()]
        del rows[1]["image"]
        (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = refusal(tmp_path, results_dir, tiny_files, drop_image, fid=True)
    assert "000001" in message and "fid=false" in message
    message = refusal(tmp_path / "b", results_dir, tiny_files,
                      lambda d: (d / "image" / "000002.png").write_bytes(b"not a png"), fid=True)
    assert "image/000002.png" in message


def test_method_is_seeded_per_request_and_uses_the_control(tiny_files):
    from harness.api import Request, build_config

    method = TinyControlAR(build_config(TinyControlAR.Config, method_settings(tiny_files), "tiny"))
    control = str(tiny_files / "data" / "control" / "000000.png")
    other = str(tiny_files / "data" / "control" / "000001.png")
    req = [Request(i, str(i), 5 + i, {"prompt": "a red car", "control": c, "control_type": "canny"})
           for i, c in enumerate((control, other))]
    both = method.generate(req)
    alone = method.generate(req[:1])
    assert both.shape == (2, 64, 64, 3) and both.dtype == np.uint8
    # not batch-dependent: same tokens (own seeded stream); the float decode may round a pixel differently
    assert np.abs(both[0].astype(int) - alone[0]).max() <= 1
    swapped = method.generate([Request(0, "0", 5, {"prompt": "a red car", "control": other, "control_type": "canny"})])
    assert np.abs(swapped[0].astype(int) - both[0]).max() > 8  # the control image changes the image


# -- bad data is refused before anything is stored ----------------------------------------------------------
def refusal(tmp_path, results_dir, tiny_files, edit, fid: bool = False) -> str:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_files / "data", data)
    edit(data)
    with pytest.raises((InputError, ArbenchError)) as info:
        run("controlar-multigen-canny", {**method_settings(tiny_files), "data": str(data), "image_size": 64,
                                         "fid": fid, "clip_score": False}, results_dir)
    assert not list(results_dir.rglob("*.png")), "images were generated before the data was refused"
    return str(info.value)


def test_missing_control_is_refused(tmp_path, results_dir, tiny_files):
    message = refusal(tmp_path, results_dir, tiny_files, lambda d: (d / "control" / "000001.png").unlink())
    assert "missing" in message and "000001.png" in message


def test_corrupt_control_is_refused(tmp_path, results_dir, tiny_files):
    message = refusal(tmp_path, results_dir, tiny_files,
                      lambda d: (d / "control" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"))
    assert "000002.png" in message


def test_blurred_canny_control_is_refused(tmp_path, results_dir, tiny_files):
    def blur(d):
        Image.fromarray(np.full((64, 64), 128, np.uint8)).save(d / "control" / "000000.png")
    assert "0 and 255" in refusal(tmp_path, results_dir, tiny_files, blur)


def test_wrong_size_and_duplicate_ids_are_refused(tmp_path, results_dir, tiny_files):
    def small(d):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "control" / "000000.png")
    assert "32x32" in refusal(tmp_path, results_dir, tiny_files, small)

    def duplicate(d):
        text = (d / "metadata.jsonl").read_text()
        (d / "metadata.jsonl").write_text(text + text.splitlines()[0] + "\n")
    assert "repeated" in refusal(tmp_path / "dup", results_dir, tiny_files, duplicate)


def test_scored_folder_must_match_the_items(tmp_path, tiny_files, monkeypatch):
    from harness.registry import TASKS

    task = TASKS.get("controlar-multigen-canny")(TASKS.get("controlar-multigen-canny").Config(
        data=str(tiny_files / "data"), image_size=64))
    folder = tmp_path / "gen"
    folder.mkdir()
    for i in (0, 1):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / f"{i:06d}.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "extra.png")
    with pytest.raises(InputError, match=r"missing 000002\.png.*not in metadata\.jsonl: extra\.png"):
        task.load_samples(folder)


def test_method_of_another_control_type_is_refused(tiny_files):
    from harness.registry import METHODS, TASKS

    task = TASKS.get("controlar-multigen-hed")(TASKS.get("controlar-multigen-hed").Config(data=str(tiny_files / "data")))
    with pytest.raises(ArbenchError, match="controlar-multigen-canny"):
        task.check_method(METHODS.get("controlar-canny")())


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_needs_images():
    with pytest.raises(ValueError, match="no images"):
        EdgeF1().compute()


def test_method_runs_in_bf16(tiny_files):
    """Upstream's default precision (bf16 for T5, the GPT and the DINOv2 encoder) runs through the whole path."""
    from harness.api import Request, build_config

    settings = {k: v for k, v in method_settings(tiny_files).items() if k != "precision"}
    method = TinyControlAR(build_config(TinyControlAR.Config, settings, "tiny"))
    control = str(tiny_files / "data" / "control" / "000000.png")
    images = method.generate([Request(0, "0", 5, {"prompt": "a red car", "control": control, "control_type": "canny"})])
    assert method.config.precision == "bf16" and images.shape == (1, 64, 64, 3) and images.dtype == np.uint8
