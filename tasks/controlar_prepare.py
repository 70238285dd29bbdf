"""Build the controlar-multigen-{canny,hed,depth} data folders from a MultiGen-20M validation download.

    python -m tasks.controlar_prepare DOWNLOAD [--out DIR] [--control canny hed depth] [--max-items N] [--device cuda]

DOWNLOAD is what upstream's README has one save as `data/MultiGen20M/data`: the parquet files of the Hugging Face
dataset limingcv/MultiGen-20M_depth (columns `image`, `text`, `control_depth`; images as {bytes, path}). The
validation split is the files whose name starts with `validation` (the Hub's `validation-00000-of-0000N.parquet`),
read in name order, rows in file order, as `datasets.load_dataset(DOWNLOAD)["validation"]` lists them.

What is written follows hustvl/ControlAR@87e32e9 step by step:

- `autoregressive/train/extract_file_multigen.py` (run with `--split validation`): row i's image, `convert("RGB")`,
  `Resize((512, 512), bicubic, antialias)`, `ToTensor`, `Normalize(0.5, 0.5)`, saved as
  `(255 * (x * 0.5 + 0.5)).astype(uint8)` (a truncating cast): upstream's `val/image/<i>.png`, the FID reference
  and the source of the canny / HED controls; the depth map `control_depth.convert("RGB")`, the same resize,
  `ToTensor`, `(255 * x).astype(uint8)`: `val/control_depth/<i>.png`;
- `dataset/t2i_control.py` + `autoregressive/test/test_t2i.py`: the control the model is given and the
  `annotations/<i:06d>.png` the scores compare with, both `save_image(control[0], normalize=True,
  value_range=(-1, 1))` of `2 * (c / 255 - 0.5)`: canny `c = Canny(image, 100, 200)`; HED `c = HED(image)` (the
  ControlNet annotator, `ControlNetHED.pth`); depth `c` = the saved depth PNG.

Output, per control type (default `$ARBENCH_HOME/data/controlar-multigen/<type>/`, where the tasks look):
`metadata.jsonl` (`{"id": "000000", "prompt": text, "control": "control/000000.png", "image": "image/000000.png"}`),
`control/`, `image/` (hard links between the type folders where the file system allows). Nothing is stored until
everything is checked: an existing output folder is refused, missing files, columns and HED weights are named
first, and each folder is written under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from harness.config import arbench_home
from harness.errors import ArbenchError, InputError
from harness.features import control_maps

TYPES = ("canny", "hed", "depth")
SIZE = 512  # extract_file_multigen.py: resolution = (512, 512)
READ_BATCH = 16


def validation_files(download: Path) -> list[Path]:
    """The validation split's parquet files under `download` (searched recursively), in name order."""
    if not download.is_dir():
        raise InputError(f"{download} is not a folder: give the folder of MultiGen-20M's parquet files "
                         "(upstream's data/MultiGen20M/data).")
    files = sorted(p for p in download.rglob("*.parquet") if p.name.startswith("validation"))
    if not files:
        raise InputError(f"{download} holds no validation-*.parquet file: download the validation split of "
                         "limingcv/MultiGen-20M_depth (its data/validation-*.parquet files) into it.")
    return files


def check_columns(files: Sequence[Path], types: Sequence[str]) -> int:
    """The row count of the split; raises InputError naming every file that lacks a needed column."""
    import pyarrow.parquet as pq

    needed = {"image", "text"} | ({"control_depth"} if "depth" in types else set())
    problems, rows = [], 0
    for f in files:
        try:
            meta = pq.ParquetFile(f)
        except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable parquet
            problems.append(f"{f} cannot be read as parquet ({type(exc).__name__}: {exc})")
            continue
        missing = needed - set(meta.schema_arrow.names)
        if missing:
            problems.append(f"{f} lacks the column(s) {', '.join(sorted(missing))}")
        rows += meta.metadata.num_rows
    if problems:
        raise InputError("the download cannot be used: " + "; ".join(problems) + ". MultiGen-20M's parquet files "
                         "have the columns image, text and control_depth.")
    if rows == 0:
        raise InputError("the validation parquet files hold no rows.")
    return rows


def iter_rows(files: Sequence[Path], columns: Sequence[str]) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=READ_BATCH, columns=list(columns)):
            yield from batch.to_pylist()


def _pil(cell, what: str, index: int) -> Image.Image:
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"validation row {index}: {what} carries no image bytes (expected a {{bytes, path}} cell).")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for a corrupt image
        raise InputError(f"validation row {index}: {what} cannot be decoded ({type(exc).__name__}: {exc}).") from exc
    return image


def _resize(image: Image.Image) -> torch.Tensor:
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((SIZE, SIZE), interpolation=transforms.InterpolationMode.BICUBIC,
                                                  antialias=True), transforms.ToTensor()])(image)


def validation_image(image: Image.Image) -> np.ndarray:
    """extract_file_multigen.py's `image_transforms` and its save: uint8 (512, 512, 3)."""
    x = (_resize(image.convert("RGB")) - 0.5) / 0.5  # Normalize([0.5], [0.5])
    return (255 * (x.numpy().transpose(1, 2, 0) * 0.5 + 0.5)).astype("uint8")


def depth_image(image: Image.Image) -> np.ndarray:
    """extract_file_multigen.py's `conditioning_image_transforms` and its save: uint8 (512, 512, 3)."""
    return (255 * _resize(image.convert("RGB")).numpy().transpose(1, 2, 0)).astype("uint8")


def save_annotation(control: torch.Tensor, path: Path) -> None:
    """test_t2i.py's annotation: `save_image(2 * (c / 255 - 0.5), normalize=True, value_range=(-1, 1))` of the
    control's first channel (c a float tensor in 0..255, in upstream's dtype: float64 for the NumPy canny and depth
    controls, float32 for HED's output)."""
    from torchvision.utils import save_image

    save_image(2 * (control / 255 - 0.5), str(path), nrow=1, normalize=True, value_range=(-1, 1))


def prepare(download: Path, out: Path, types: Sequence[str] = TYPES, max_items: int = 0, device: str = "cpu",
            log=print) -> dict[str, Path]:
    """Write one data folder per control type; returns {type: folder}."""
    types = list(dict.fromkeys(types))
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        raise InputError(f"unknown control type(s) {unknown}; choose from {list(TYPES)}.")
    targets = {t: out / t for t in types}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing:
        raise InputError(f"{', '.join(existing)} already exist(s); nothing was changed. Remove them or give "
                         "another --out.")
    files = validation_files(download)
    rows = check_columns(files, types)
    hed = control_maps.load_hed(device) if "hed" in types else None  # missing weights refused before writing
    total = min(rows, max_items) if max_items else rows
    out.mkdir(parents=True, exist_ok=True)
    temps = {t: out / f".{t}.partial-{os.getpid()}" for t in types}
    try:
        for temp in temps.values():
            (temp / "image").mkdir(parents=True)
            (temp / "control").mkdir()
        metadata = {t: open(temps[t] / "metadata.jsonl", "w", encoding="utf-8") for t in types}
        try:
            columns = ["image", "text"] + (["control_depth"] if "depth" in types else [])
            for i, row in enumerate(iter_rows(files, columns)):
                if i == total:
                    break
                _write_item(i, row, types, temps, metadata, hed, device)
                if (i + 1) % 500 == 0:
                    log(f"{i + 1} / {total} items")
        finally:
            for handle in metadata.values():
                handle.close()
        for t in types:
            os.replace(temps[t], targets[t])
    finally:
        for temp in temps.values():
            shutil.rmtree(temp, ignore_errors=True)
    log(f"wrote {total} items to " + ", ".join(str(p) for p in targets.values()))
    return targets


def _write_item(i: int, row: dict, types: Sequence[str], temps: dict[str, Path], metadata: dict, hed, device: str):
    item = f"{i:06d}"
    if not isinstance(row.get("text"), str) or not row["text"].strip():
        raise InputError(f"validation row {i} has no caption (column text).")
    image = validation_image(_pil(row["image"], "image", i))
    first = temps[types[0]] / "image" / f"{item}.png"
    Image.fromarray(image, "RGB").save(first)
    for t in types:
        target = temps[t] / "image" / f"{item}.png"
        if target != first:
            try:
                os.link(first, target)
            except OSError:
                shutil.copyfile(first, target)
        if t == "canny":
            control = torch.from_numpy(control_maps.canny(image).astype(np.float64))
        elif t == "hed":
            with torch.no_grad():
                x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
                control = hed(x)[0].cpu()
        else:
            control = torch.from_numpy(depth_image(_pil(row["control_depth"], "control_depth", i))[..., 0].astype(np.float64))
        save_annotation(control, temps[t] / "control" / f"{item}.png")
        metadata[t].write(json.dumps({"id": item, "prompt": row["text"], "control": f"control/{item}.png",
                                      "image": f"image/{item}.png"}) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.controlar_prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("download", type=Path, help="folder of MultiGen-20M's parquet files (validation-*.parquet)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the <type>/ folders go (default $ARBENCH_HOME/data/controlar-multigen)")
    parser.add_argument("--control", nargs="+", default=list(TYPES), choices=TYPES)
    parser.add_argument("--max-items", type=int, default=0, help="only the first N items (0: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="for HED")
    args = parser.parse_args(argv)
    try:
        prepare(args.download, args.out or arbench_home() / "data" / "controlar-multigen", args.control,
                args.max_items, args.device)
    except ArbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
