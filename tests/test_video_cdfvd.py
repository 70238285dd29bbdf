"""Content-debiased FVD: the VideoMAE-v2 ViT-g network at its released configuration, safe strict loading,
the feature pipeline, and cd-FVD stored beside (never instead of) FVD by the UCF-101 task."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from test_video_task import TinyUCF, make_fake_ucf

from harness.errors import ArbenchError, MissingAssetError
from harness.features import videomae
from harness.metrics.frechet import frechet_distance
from harness.registry import register_task
from harness.runner import RunOptions, Runner
from harness.store import Store

# upstream's position-embedding interpolation assumes the released 16x16 patch grid and 8 tubelets, so the
# small test network keeps those and shrinks only its width and depth
SMALL = dict(img_size=224, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5,
             all_frames=16, tubelet_size=2)


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return videomae.build_videomae_v2(**SMALL).eval()


def test_released_configuration_has_the_vit_g_names_and_shapes():
    state = videomae.build_videomae_v2(meta=True).state_dict()
    assert sum(v.numel() for v in state.values()) == 1_011_855_918  # ViT-g/14: 1,011M parameters
    assert len([k for k in state if k.endswith(".attn.qkv.weight")]) == 40
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["patch_embed.proj.weight"] == (1408, 3, 2, 14, 14)  # tubelet 2, patch 14
    assert shapes["blocks.0.attn.qkv.weight"] == (3 * 1408, 1408)
    assert "blocks.0.attn.q_bias" in shapes and "blocks.0.attn.v_bias" in shapes  # no k bias, as VideoMAE
    assert shapes["blocks.39.mlp.fc1.weight"] == (6144, 1408)
    assert shapes["fc_norm.weight"] == (1408,) and shapes["head.weight"] == (174, 1408)  # SSv2 head


def test_loading_is_strict_and_safe(tmp_path):
    source = small_model(1)
    path = tmp_path / "videomae.pth"
    torch.save({"module": source.state_dict()}, path)
    loaded = videomae.load_videomae_v2(path, small_model(2))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))

    state = dict(source.state_dict())
    state["blocks.9.mlp.fc1.weight"] = state.pop("blocks.1.mlp.fc1.weight")
    torch.save({"model": state}, path)
    with pytest.raises(ArbenchError, match=r"missing keys \['blocks.1.mlp.fc1.weight'\].*unexpected keys "
                                           r"\['blocks.9.mlp.fc1.weight'\]"):
        videomae.load_videomae_v2(path, small_model())

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ArbenchError, match="weights_only"):
        videomae.load_videomae_v2(path, small_model())
    assert not marker.exists()


def test_features_resize_every_frame_and_do_not_depend_on_batching():
    clips = np.random.default_rng(0).integers(0, 256, (5, 4, 20, 30, 3), dtype=np.uint8)
    x = videomae.preprocess(clips, size=28)
    assert x.shape == (5, 3, 4, 28, 28) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    frame = torch.nn.functional.interpolate(torch.as_tensor(clips[2, 3]).permute(2, 0, 1)[None].float() / 255,
                                            size=(28, 28), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(x[2, :, 3], frame)
    features = videomae.videomae_features(small_model())
    whole = features(clips)
    assert whole.shape == (5, 32)
    torch.testing.assert_close(torch.cat([features(clips[:2]), features(clips[2:])]), whole, atol=1e-5, rtol=1e-5)


@register_task("test-ucf101-tiny-cd")
class TinyUCFWithCD(TinyUCF):
    cd_feature_dim = 32

    def cd_feature_extractor(self, device):
        return videomae.videomae_features(small_model(), device)


def test_ucf_task_stores_cd_fvd_beside_fvd(results_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    root = make_fake_ucf(tmp_path)
    videos = np.random.default_rng(1).integers(0, 256, (6, 12, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "gen.npz", videos=videos, labels=np.arange(6) % 3)
    runner = Runner(Store(f"sqlite:///{results_dir / 'arbench.db'}"), RunOptions(progress=False))
    plain = runner.score("test-ucf101-tiny-cd", tmp_path / "gen.npz", {"ucf101_root": str(root)})
    both = runner.score("test-ucf101-tiny-cd", tmp_path / "gen.npz", {"ucf101_root": str(root), "cd_fvd": True})
    assert [m.name for m in plain.metrics] == ["fvd"]
    values = {m.name: m for m in both.metrics}
    assert set(values) == {"fvd", "cd_fvd"} and values["cd_fvd"].value > 0
    assert "never comparable" in values["cd_fvd"].description
    assert values["fvd"].value == pytest.approx(plain.metrics[0].value, rel=1e-12)  # FVD itself is untouched
    records = {r["run_id"]: r for r in runner.store.records()}
    assert "cd_fvd" not in records[plain.run_id]["eval_signature"]
    assert "cd_fvd:cd_fvd:2" in records[both.run_id]["eval_signature"]
    (cache,) = (tmp_path / "home" / "fvd-stats").glob("test-ucf101-tiny-cd-cdfvd-r0-*.npz")
    # cd-fvd's definition: both covariances divided by N (the cache keeps the unbiased one and the count)
    with np.load(cache) as real:
        n_real, real_stats = int(real["count"]), (real["mu"], real["sigma"])
    clips = videos[:, :TinyUCFWithCD.protocol.num_frames]  # a generated clip: the first frames at stride 1
    gen_feats = videomae.videomae_features(small_model())(clips).double().numpy()
    gen_mu, gen_cov, n_gen = gen_feats.mean(0), np.cov(gen_feats, rowvar=False), len(gen_feats)
    expected = frechet_distance(real_stats[0], real_stats[1] * (n_real - 1) / n_real,
                                gen_mu, gen_cov * (n_gen - 1) / n_gen)
    assert values["cd_fvd"].value == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(*real_stats, gen_mu, gen_cov) != pytest.approx(expected, rel=1e-3)


def test_cd_fvd_without_its_weights_names_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    with pytest.raises(MissingAssetError, match="vit_g_hybrid_pt_1200e_ssv2_ft.pth.*pjlab-gvm-data"):
        videomae.VIDEOMAE_V2_G.resolve()
