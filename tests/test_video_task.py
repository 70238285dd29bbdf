"""FVD tasks end to end: the offline moving-digits task, and the UCF-101 protocol logic on a tiny fake UCF copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import InputError, MissingAssetError
from harness.metrics.video import write_video
from harness.registry import TASKS, register_task
from harness.runner import RunOptions, Runner
from harness.store import Store
from tasks.video_fvd import PROTOCOLS, FVDProtocol, UCF101FVD, stratified_order


def _runner(results: Path) -> Runner:
    return Runner(Store(f"sqlite:///{results / 'arbench.db'}"), RunOptions(progress=False, batch_size=64,
                                                                            shard_size=256))


def test_protocols_are_named_tasks_with_their_settings_in_the_signature(tmp_path, monkeypatch):
    assert set(PROTOCOLS) <= set(TASKS.names())
    ten_k = TASKS.get("ucf101-fvd10k-16f-128").protocol
    assert (ten_k.num_generated, ten_k.repeats, ten_k.real_splits) == (10_000, 4, ("train",))
    assert TASKS.get("ucf101-fvd2048-16f-stride8-128").protocol.span == 121
    root = make_fake_ucf(tmp_path, official_class_list=True)
    cls = TASKS.get("ucf101-fvd2048-16f-256")
    sig = str(cls(cls.Config(ucf101_root=str(root))).signature())
    for part in ("protocol.num_generated:2048", "protocol.resolution:256", "protocol.real_splits:[\"train\",\"test\"]",
                 "features_git_blob:a867b87ac3a9097d200598b1d48a1b890d8ec744", "real_list_sha256:", "seed:0"):
        assert part in sig, part
    assert str(root) not in sig  # where the data lives does not change a number


def test_stratified_order_is_balanced_and_seeded():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 4)
    order = stratified_order(labels, seed=3, num_classes=3)
    assert sorted(order) == list(range(11))
    assert list(labels[order[:6]]) == [0, 1, 2, 0, 1, 2]
    assert list(labels[order[6:]]) == [0, 2, 0, 2, 0]
    assert not np.array_equal(order, stratified_order(labels, seed=4, num_classes=3))


# -- the offline task --------------------------------------------------------------------------


def test_moving_digits_demo_ranks_generators_and_real_data(results_dir, tmp_path):
    from harness.datasets.moving_digits import balanced_labels, sample_clips

    runner = _runner(results_dir)
    moving = runner.run("moving-digits-fvd", "moving-digits-pca").metrics[0]
    static = runner.run("moving-digits-fvd", "moving-digits-pca-static").metrics[0]
    labels = balanced_labels(512)
    real, _ = sample_clips("reference", labels, seed=777)  # other real clips of the held-out digits
    np.savez(tmp_path / "real.npz", videos=real, labels=labels)
    oracle = runner.score("moving-digits-fvd", tmp_path / "real.npz").metrics[0]
    assert moving.name == "fvd_digits" and not moving.higher_is_better
    assert oracle.value < moving.value < static.value  # real < PCA digits that move < PCA digits standing still
    records = runner.store.records()
    assert len(records) == 3 and all(r["status"] == "finished" for r in records)
    assert "features_sha256:" in records[0]["signature"] and "protocol.num_real:512" in records[0]["signature"]


def test_bad_samples_store_nothing(results_dir, tmp_path):
    runner = _runner(results_dir)
    np.savez(tmp_path / "short.npz", videos=np.zeros((512, 8, 32, 32, 3), np.uint8), labels=np.arange(512) % 10)
    with pytest.raises(InputError, match="8 frames per video"):
        runner.score("moving-digits-fvd", tmp_path / "short.npz")
    np.savez(tmp_path / "unbalanced.npz", videos=np.zeros((512, 16, 32, 32, 3), np.uint8), labels=np.zeros(512, int))
    with pytest.raises(InputError, match="class-balanced"):
        runner.score("moving-digits-fvd", tmp_path / "unbalanced.npz")
    assert runner.store.records() == []
    task = TASKS.get("moving-digits-fvd")()
    with pytest.raises(InputError, match="needs uint8"):  # a method returning the wrong frames is refused too
        task.write_shard(np.zeros((2, 16, 64, 64, 3), np.uint8), task.requests()[:2], tmp_path)


# -- UCF-101 protocol logic on a fake copy ----------------------------------------------------------

CLASSES = ("ApplyEyeMakeup", "Basketball", "YoYo")


def make_fake_ucf(tmp_path: Path, frames: int = 14, official_class_list: bool = False) -> Path:
    """UCF-101 layout: UCF-101/<Class>/v_<Class>_gXX_cYY.avi plus ucfTrainTestlist/, 320x240-like aspect.
    With `official_class_list`, classInd.txt is the official 101-class file (videos still of 3 classes), as
    the real protocols require."""
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, test = [], []
    for c, name in enumerate(CLASSES):
        (root / "UCF-101" / name).mkdir(parents=True)
        for g in range(1, 4):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            video = np.full((frames + g, 24, 32, 3), 40 * c + 10 * g, np.uint8)
            video += rng.integers(0, 30, video.shape, dtype=np.uint8)
            write_video(root / "UCF-101" / rel, video)
            (test if g == 3 else train).append(rel)
    from harness.datasets.ucf101 import UCF101_CLASS_NAMES

    names = UCF101_CLASS_NAMES if official_class_list else CLASSES
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (lists / "trainlist01.txt").write_text("".join(f"{r} {CLASSES.index(r.split('/')[0]) + 1}\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    return root


class TinyFeatures(torch.nn.Module):
    """A fixed random 3D conv feature network standing in for I3D (which is tested on its own)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 8, 3, stride=2)

    @torch.no_grad()
    def forward(self, clips):
        x = torch.as_tensor(np.asarray(clips)).float().permute(0, 4, 1, 2, 3) / 127.5 - 1
        return torch.tanh(self.conv(x)).mean(dim=(2, 3, 4))


@register_task("test-ucf101-tiny")
class TinyUCF(UCF101FVD):
    """The UCF-101 task logic at a scale a test can run: 3 classes, 6 vs 6 clips of 10 frames at 16 px."""

    protocol = FVDProtocol(resolution=16, num_frames=10, num_generated=6, num_real=6, num_classes=3)
    feature_dim = 8

    def check_assets(self) -> None:
        self.real_list()  # the I3D weights are not needed by this stand-in

    def feature_extractor(self, device):
        return TinyFeatures()


def test_ucf_real_selection_is_stratified_seeded_and_cached(results_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    root = make_fake_ucf(tmp_path)
    task = TinyUCF(TinyUCF.Config(ucf101_root=str(root)))
    files, offsets, labels = task.real_clips(0)
    assert list(labels) == [0, 1, 2, 0, 1, 2]
    assert len(set(files)) == 6 and all(0 <= o <= 7 for o in offsets)
    assert task.real_clips(0)[1] == offsets
    assert task.real_clips(1)[0] != files or task.real_clips(1)[1] != offsets  # another repeat, another draw
    batch = next(task.real_batches(0, 4))
    assert batch.shape == (4, 10, 16, 16, 3) and batch.dtype == np.uint8

    videos = np.random.default_rng(1).integers(0, 256, (6, 12, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "gen.npz", videos=videos, labels=np.arange(6) % 3)
    runner = _runner(results_dir)
    first = runner.score("test-ucf101-tiny", tmp_path / "gen.npz", {"ucf101_root": str(root)})
    cached = list((tmp_path / "home" / "fvd-stats").glob("test-ucf101-tiny-r0-*.npz"))
    assert len(cached) == 1
    runner.options.repeat = True  # an identical request is otherwise answered from the store, computing nothing
    second = runner.score("test-ucf101-tiny", tmp_path / "gen.npz", {"ucf101_root": str(root)})
    assert second.metrics[0].value == pytest.approx(first.metrics[0].value, rel=1e-12)
    assert first.metrics[0].name == "fvd" and first.metrics[0].value > 0
    logs = [line for record in runner.store.records() for line in record["provenance"]["log"]]
    assert sum("from cache" in line for line in logs) == 1 and sum("computing real" in line for line in logs) == 1


def test_ucf_without_data_or_weights_fails_before_storing(results_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARBENCH_UCF101", raising=False)
    np.savez(tmp_path / "gen.npz", videos=np.zeros((2, 16, 128, 128, 3), np.uint8), labels=np.zeros(2, int))
    runner = _runner(results_dir)
    with pytest.raises(MissingAssetError, match="no UCF-101 copy at .*crcv.ucf.edu") as both:
        runner.score("ucf101-fvd2048-16f-128", tmp_path / "gen.npz")
    assert "needs 2 files" in str(both.value) and "i3d_pretrained_400.pt" in str(both.value)  # named at once
    root = make_fake_ucf(tmp_path, official_class_list=True)
    with pytest.raises(MissingAssetError, match="i3d_pretrained_400.pt"):
        runner.score("ucf101-fvd2048-16f-128", tmp_path / "gen.npz", {"ucf101_root": str(root)})
    assert runner.store.records() == []


def test_a_reordered_class_list_is_refused(tmp_path):
    """Labels follow the official classInd.txt order; a copy in another order is refused, naming the first
    difference (it would pair every generated class with the wrong real class)."""
    from harness.datasets.ucf101 import UCF101_CLASS_NAMES
    from tasks.video_fvd import check_class_order

    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    official = "".join(f"{i + 1} {n}\n" for i, n in enumerate(UCF101_CLASS_NAMES))
    (lists / "classInd.txt").write_text(official)
    check_class_order(tmp_path)
    swapped = list(UCF101_CLASS_NAMES)
    swapped[34], swapped[35] = swapped[35], swapped[34]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(swapped)))
    with pytest.raises(InputError, match="label 35 is 'HammerThrow' where the official file has 'Hammering'"):
        check_class_order(tmp_path)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(UCF101_CLASS_NAMES[:100])))
    with pytest.raises(InputError, match=r"\(100 classes\): label 101 is 'nothing'"):
        check_class_order(tmp_path)
