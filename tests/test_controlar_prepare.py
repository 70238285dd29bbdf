"""`python -m tasks.controlar_prepare` on a tiny synthetic MultiGen-20M validation download: the written images and
controls against upstream's transforms written out here (ControlAR@87e32e9 extract_file_multigen.py,
t2i_control.py, test_t2i.py), the folders read back by the task, and the refusals before anything is stored."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import ArbenchError, InputError
from tasks import controlar_prepare as prep
from tasks.controlar_multigen import control_array, read_items, rgb_array

CAPTIONS = ["a house by a lake", "a cat on a sofa", "a street at night"]


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def sources(n: int = 3):
    rng = np.random.default_rng(5)
    images = [np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((40, 40, 1))).astype(np.uint8) for _ in range(n)]
    depths = [np.kron(rng.integers(0, 256, (6, 8)), np.ones((80, 80))).astype(np.uint8) for _ in range(n)]
    return images, depths  # 480 x 640 images (not square, not 512: the resize matters)


def write_download(folder: Path, n: int = 3, drop: str = "") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, depths = sources(n)
    cell = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {"image": pa.array([{"bytes": png(im, "JPEG"), "path": f"{i}.jpg"} for i, im in enumerate(images)], cell),
               "text": pa.array(CAPTIONS[:n]),
               "control_depth": pa.array([{"bytes": png(d), "path": None} for d in depths], cell)}
    columns.pop(drop, None)
    folder.mkdir(parents=True)
    table = pa.table(columns)
    pq.write_table(table.slice(0, 2), folder / "validation-00000-of-00002.parquet")
    pq.write_table(table.slice(2), folder / "validation-00001-of-00002.parquet")
    pq.write_table(table.slice(0, 1), folder / "train-00000-of-00001.parquet")  # not the validation split


def upstream_image(jpeg: bytes) -> np.ndarray:
    """extract_file_multigen.py's image_transforms and its save, written as upstream writes them."""
    from torchvision import transforms

    t = transforms.Compose([transforms.Resize((512, 512), interpolation=transforms.InterpolationMode.BICUBIC,
                                              antialias=True), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    x = torch.stack([t(Image.open(io.BytesIO(jpeg)).convert("RGB"))])
    return (255 * (x[0].numpy().transpose(1, 2, 0) * 0.5 + 0.5)).astype("uint8")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("multigen")
    write_download(root / "data")
    return root, prep.prepare(root / "data", root / "out", ["canny", "depth"], log=lambda m: None)


def test_images_and_controls_are_upstreams(prepared):
    import cv2
    from torchvision import transforms

    root, folders = prepared
    images, depths = sources()
    for kind in ("canny", "depth"):
        rows = [json.loads(line) for line in (folders[kind] / "metadata.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == ["000000", "000001", "000002"]
        assert [r["prompt"] for r in rows] == CAPTIONS
    for i in range(3):
        expected = upstream_image(png(images[i], "JPEG"))
        for kind in ("canny", "depth"):
            np.testing.assert_array_equal(rgb_array(folders[kind] / "image" / f"{i:06d}.png"), expected)
        # canny: t2i_control.py CannyDetector on the saved image, test_t2i.py's save_image of 2 * (c / 255 - 0.5)
        saved = np.asarray(Image.open(folders["canny"] / "control" / f"{i:06d}.png"))
        assert saved.shape == (512, 512, 3)
        np.testing.assert_array_equal(saved[..., 0], cv2.Canny(expected, 100, 200))
        # depth: conditioning_image_transforms of control_depth.convert("RGB"), 255 * x -> uint8, first channel
        t = transforms.Compose([transforms.Resize((512, 512), interpolation=transforms.InterpolationMode.BICUBIC,
                                                  antialias=True), transforms.ToTensor()])
        depth = (255 * t(Image.fromarray(depths[i]).convert("RGB")).numpy().transpose(1, 2, 0)).astype("uint8")
        np.testing.assert_array_equal(control_array(folders["depth"] / "control" / f"{i:06d}.png"), depth[..., 0])


def test_the_task_reads_the_folders(prepared):
    _, folders = prepared
    for kind in ("canny", "depth"):
        items, _ = read_items(folders[kind], kind, 512, need_images=True)
        assert [it.prompt for it in items] == CAPTIONS and all(it.image.is_file() for it in items)


def test_hed_controls_come_from_the_hed_network(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = prep.control_maps.ControlNetHED().eval()
    monkeypatch.setattr(prep.control_maps, "load_hed", lambda device: net)
    write_download(tmp_path / "data", n=1)
    folder = prep.prepare(tmp_path / "data", tmp_path / "out", ["hed"], log=lambda m: None)["hed"]
    image = rgb_array(folder / "image" / "000000.png")
    with torch.no_grad():
        hed = net(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float())[0]
    expected = (((2 * (hed / 255 - 0.5)).clamp(-1, 1) + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(control_array(folder / "control" / "000000.png"), expected)


def test_refusals_store_nothing(tmp_path, prepared):
    root, folders = prepared
    with pytest.raises(InputError, match="already exist"):
        prep.prepare(root / "data", root / "out", ["canny"], log=lambda m: None)
    write_download(tmp_path / "nodepth", drop="control_depth")
    with pytest.raises(InputError, match="control_depth"):
        prep.prepare(tmp_path / "nodepth", tmp_path / "out", ["canny", "depth"], log=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="validation-"):
        prep.prepare(tmp_path / "empty", tmp_path / "out", ["canny"], log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_a_corrupt_row_leaves_no_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    cell = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    image = png(sources(1)[0][0])
    pq.write_table(pa.table({"image": pa.array([{"bytes": image, "path": None}, {"bytes": b"junk", "path": None}], cell),
                             "text": pa.array(["ok", "broken"])}), tmp_path / "data" / "validation-0.parquet")
    with pytest.raises(InputError, match="row 1: image cannot be decoded"):
        prep.prepare(tmp_path / "data", tmp_path / "out", ["canny"], log=lambda m: None)
    assert list((tmp_path / "out").iterdir()) == []


def test_hed_without_weights_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    write_download(tmp_path / "data", n=1)
    with pytest.raises(ArbenchError, match="ControlNetHED.pth"):
        prep.prepare(tmp_path / "data", tmp_path / "out", ["canny", "hed"], log=lambda m: None)
    assert not (tmp_path / "out").exists()
    assert prep.main([str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--control", "hed"]) == 2
