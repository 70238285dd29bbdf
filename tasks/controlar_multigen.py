"""controlar-multigen-{canny,hed,depth}: controllable text-to-image scored by controllability, as ControlAR (Li et
al., ICLR 2025) evaluates on MultiGen-20M (hustvl/ControlAR@87e32e9, `autoregressive/test/test_t2i.py` +
`evaluations/`). One task per control type (each has its own metric and direction).

Each item is a caption and a control map; the method generates one image per item from both, and the control map
is re-extracted from the generated image and compared with the control (`harness.metrics.controllability`):

    controlar-multigen-canny  canny_f1   OpenCV Canny(100, 200) edges vs the canny control      (higher is better)
    controlar-multigen-hed    hed_ssim   ControlNet-HED soft edges vs the HED control (MS-SSIM) (higher is better)
    controlar-multigen-depth  depth_rmse DPT-Large depth (x 255 / max) vs the depth control     (lower is better)

Data (`data` setting; default $ARBENCH_HOME/data/controlar-multigen/<canny|hed|depth>/):

    <data>/metadata.jsonl       one JSON object a line: {"id": "000000", "prompt": "...", "control": "control/000000.png",
                                "image": "image/000000.png"}
    <data>/control/000000.png   the control map, image_size x image_size (greyscale or RGB; the first channel is
                                compared): upstream's saved `annotations/` (canny: 0/255 edges of the validation
                                image; hed: its HED map; depth: MultiGen-20M's depth map)
    <data>/image/000000.png     the validation image itself, image_size x image_size (upstream's `val/image/`,
                                the FID reference); needed only with fid=true
`python -m tasks.controlar_prepare` builds such a folder from MultiGen-20M's validation parquet files.

Beside the controllability metric, as ControlAR reports beside it: `clean_fid` (clean-fid's "clean" mode between the
generated and the validation images, `evaluations/clean_fid.py`) and `clip_score` (`evaluations/t2i/evaluation.py`:
CLIP ViT-B/32 cosine with the caption); either can be turned off (fid=false, clip_score=false).

The segmentation controls (ADE20K / COCOStuff mIoU) need mmsegmentation's segmenters and are not part of this
task (docs/controlar.md says what is left and why).
Generated images are written as `<id>.png`; `arbench score controlar-multigen-<type> <folder>` reads such a folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from PIL import Image

from harness.api import Method, Request, SubmissionSpec, Task
from harness.config import arbench_home
from harness.errors import ArbenchError, InputError
from harness.features import control_maps
from harness.features.clip_score import CLIP_VIT_B32_OPENAI, ClipScorer
from harness.features.inception import CLEANFID_INCEPTION, extract_cleanfid_features, load_cleanfid_inception
from harness.inputs import decode_image, read_text
from harness.metrics.base import MetricValue
from harness.metrics.controllability import ClipScore, DepthRMSE, EdgeF1, HedSSIM, depth_rmse, edge_f1, ms_ssim
from harness.metrics.frechet import FrechetDistance, feature_statistics
from harness.protocols.controllable_text_to_image import MODALITY, ControlConditioned
from harness.registry import register_task
from harness.settings import Annotated, Field, Seed
from harness.signature import Signature
from harness.weights import require_all

ITEM_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
METRICS = {"canny": EdgeF1, "hed": HedSSIM, "depth": DepthRMSE}
ANNOTATOR_WEIGHTS = {"canny": (), "hed": (control_maps.HED_WEIGHTS,), "depth": control_maps.DPT_LARGE}
CHUNK = 16  # upstream's evaluation batch size
FID_VERSION = "1"
SHOWN = 5


@dataclass(frozen=True)
class ControlItem:
    """One caption with its control map."""

    index: int
    id: str
    prompt: str
    control: Path
    image: Path | None = None  # the validation image (FID reference)


@dataclass(frozen=True)
class Generated:
    item: ControlItem
    path: Path


@dataclass
class ControlARMultiGenConfig:
    data: str = ""  # folder with metadata.jsonl; default $ARBENCH_HOME/data/controlar-multigen/<control type>
    image_size: Annotated[int, Field(ge=16, le=2048, multiple_of=16)] = 512
    max_items: Annotated[int, Field(ge=0)] = 0  # 0: every item (upstream: the 5,000 MultiGen-20M validation items)
    fid: bool = True  # clean-fid 'clean' FID against the items' validation images (metadata "image")
    clip_score: bool = True  # CLIP ViT-B/32 score of each image with its caption
    seed: Seed = 0


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _inside(folder: Path, name: str) -> Path | None:
    path = (folder / name).resolve()
    return path if folder.resolve() in path.parents else None


def read_items(folder: Path, control_type: str, image_size: int, max_items: int = 0,
               need_images: bool = False) -> tuple[list[ControlItem], str]:
    """Every item of a data folder, validated (controls and, when listed or `need_images`, validation images decoded
    and sized, canny maps binary), and a digest of the metadata and image files; raises InputError naming the first
    offenders and how to fix them."""
    metadata = folder / "metadata.jsonl"
    if not metadata.is_file():
        raise InputError(f"{metadata} is missing: controlar-multigen reads one JSON line per item "
                         '{"id", "prompt", "control"} from <data>/metadata.jsonl (set data=<folder>; docs/controlar.md).')
    text = read_text(metadata, "metadata", owner="task controlar-multigen")
    digest = hashlib.sha256(text.encode())
    items, bad, seen = [], [], set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad.append(f"line {n} is not JSON")
            continue
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in ("id", "prompt", "control")):
            bad.append(f"line {n} lacks a non-empty string id, prompt or control")
            continue
        if not ITEM_ID.fullmatch(row["id"]) or row["id"] in seen:
            bad.append(f"line {n} id {row['id']!r} is {'repeated' if row['id'] in seen else 'not [A-Za-z0-9_.-]{1,64}'}")
            continue
        seen.add(row["id"])
        control = _inside(folder, row["control"])
        if control is None:
            bad.append(f"line {n} control {row['control']!r} is outside the data folder")
            continue
        image = row.get("image")
        if image is not None and not (isinstance(image, str) and image):
            bad.append(f"line {n} image is not a non-empty string")
            continue
        if image is not None and _inside(folder, image) is None:
            bad.append(f"line {n} image {image!r} is outside the data folder")
            continue
        items.append(ControlItem(len(items), row["id"], row["prompt"], control, image and _inside(folder, image)))
    if bad:
        raise InputError(f"{metadata}: {_listed(bad)}. Each line must be "
                         '{"id": "000000", "prompt": "...", "control": "control/000000.png"} with a unique id.')
    if not items:
        raise InputError(f"{metadata} lists no items.")
    if max_items:
        items = items[:max_items]
    without = [it.id for it in items if it.image is None]
    if need_images and without:
        raise InputError(f"{metadata}: {len(without)} items have no \"image\" (the validation image FID compares "
                         f"with): ids {_listed(without)}. Add \"image\": \"image/<id>.png\" to every line "
                         "(`python -m tasks.controlar_prepare` writes them), or set fid=false.")
    missing = [str(p) for it in items for p in (it.control, it.image) if p is not None and not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} images named in {metadata} are missing: {_listed(missing)}.")
    problems = []
    for item in items:
        try:
            decode_image(item.control, owner="task controlar-multigen", size=(image_size, image_size))
            if item.image is not None:
                mode = decode_image(item.image, owner="task controlar-multigen", size=(image_size, image_size))
                if mode not in ("RGB", "L"):
                    raise InputError(f"{item.image} is a {mode} image; the validation images are 8-bit RGB.")
        except InputError as exc:
            problems.append(str(exc))
            continue
        data = item.control.read_bytes()
        digest.update(hashlib.sha256(data).digest())
        if item.image is not None:
            digest.update(hashlib.sha256(item.image.read_bytes()).digest())
        if control_type == "canny":
            values = np.unique(control_array(item.control))
            if not set(values.tolist()) <= {0, 255}:
                problems.append(f"{item.control} has values other than 0 and 255 (a canny control is a binary edge "
                                "map; JPEG or resizing blurs it: save the Canny output as PNG)")
    if problems:
        raise InputError(f"{len(problems)} control or validation images cannot be used: {_listed(problems)}")
    return items, digest.hexdigest()


def control_array(path: Path) -> np.ndarray:
    """The compared channel of a control map: the first channel (upstream reads `label[:, 0]`), uint8 (H, W)."""
    with Image.open(path) as image:
        array = np.asarray(image)
    return array[..., 0] if array.ndim == 3 else array


def rgb_array(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class ControlARMultiGen(Task):
    """One control type of the protocol; registered as controlar-multigen-{canny,hed,depth} below."""

    version = "1"
    modality = MODALITY
    submission = SubmissionSpec(MODALITY, "generate(requests) -> uint8 array (N, H, W, 3), one image per request "
                                "(condition: prompt, control = path of the control PNG, control_type)")
    Config = ControlARMultiGenConfig
    #: a method opens each request's control map; a submission's child gets a copy of it, and not the data folder
    #: (its `image/` is the FID reference)
    input_keys = ("control",)
    control_type: ClassVar[str] = ""

    def __init__(self, config=None):
        super().__init__(config)
        self._items: tuple[list[ControlItem], str] | None = None

    @property
    def metric(self) -> str:
        return METRICS[self.control_type].metric_name

    def data_folder(self) -> Path:
        c = self.config
        return Path(c.data).expanduser() if c.data else arbench_home() / "data" / "controlar-multigen" / self.control_type

    def items(self) -> list[ControlItem]:
        if self._items is None:
            c = self.config
            self._items = read_items(self.data_folder(), self.control_type, c.image_size, c.max_items, c.fid)
        return self._items[0]

    def signature(self) -> Signature:
        sig = super().signature()
        self.items()
        sig.add("data_sha256", self._items[1])
        sig.add("metric", f"{self.metric}-v{METRICS[self.control_type].version}")
        sig.add("protocol", "hustvl/ControlAR@87e32e9 evaluations/")
        specs = ANNOTATOR_WEIGHTS[self.control_type]
        sig.add("annotator", {"canny": f"opencv-canny-{control_maps.CANNY_LOW}-{control_maps.CANNY_HIGH}",
                              "hed": "controlnet-hed", "depth": f"dpt-large@{control_maps.DPT_SIZE[0]}"}[self.control_type])
        if specs:  # no published checksums: the digests of the files used (missing ones are refused before a run)
            sig.add("annotator_sha256", ":".join(s.locate()[1] if s.cache_path.is_file() else "missing" for s in specs))
        if self.config.fid:
            sig.add("fid", f"clean-fid clean mode, {CLEANFID_INCEPTION.filename} sha256 {CLEANFID_INCEPTION.sha256[:12]}, "
                           f"metric v{FID_VERSION}")
        if self.config.clip_score:
            sig.add("clip_score", f"{CLIP_VIT_B32_OPENAI.name} sha256 {CLIP_VIT_B32_OPENAI.sha256[:12]}, "
                                  f"metric v{ClipScore.version}")
        return sig

    def score_weights(self) -> list:
        c = self.config
        return ([*ANNOTATOR_WEIGHTS[self.control_type]] + ([CLEANFID_INCEPTION] if c.fid else [])
                + ([CLIP_VIT_B32_OPENAI] if c.clip_score else []))

    def require_assets(self) -> None:
        """The weights scoring needs (annotator, clean-fid Inception, CLIP ViT-B/32), all named at once when missing."""
        require_all([spec.resolve for spec in self.score_weights()], f"{self.name} scoring")

    def check_data(self) -> None:
        """The data folder (metadata, controls, and images where FID needs them), before the method's weights."""
        self.items()

    def check_method(self, method: Method) -> None:
        super().check_method(method)
        expected = method.control_type if isinstance(method, ControlConditioned) else self.control_type
        if expected != self.control_type:
            raise ArbenchError(f"method {method.name!r} is conditioned on {expected} maps; task {self.name} scores "
                               f"{self.control_type} control (run controlar-multigen-{expected}, or pick the "
                               f"ControlAR method for {self.control_type}: `arbench methods`).")
        # the method's weights and the annotator, before anything is generated or stored (the data: check_data)
        require_all([method.checkpoint_sha256, self.require_assets], f"{self.name} with {method.name}")

    # -- generation ----------------------------------------------------------------------------
    def requests(self) -> list[Request]:
        c = self.config
        return [Request(it.index, it.id, c.seed * 1_000_003 + it.index,
                        {"prompt": it.prompt, "control": str(it.control), "control_type": self.control_type})
                for it in self.items()]

    def write_shard(self, outputs: Any, requests: Sequence[Request], directory: Path) -> None:
        images = np.asarray(outputs)
        size = self.config.image_size
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3) or len(images) != len(requests):
            raise ArbenchError(f"a controllable text-to-image method must return uint8 (N, {size}, {size}, 3), one "
                               f"image per request; got {images.dtype} {images.shape} for {len(requests)} requests")
        for image, request in zip(images, requests):
            Image.fromarray(image, "RGB").save(directory / f"{request.id}.png")

    def read_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request]) -> list[Generated]:
        found = {p.stem: p for d in shard_dirs for p in Path(d).glob("*.png")}
        return self._match(found, "the generated shards")

    def load_samples(self, path: Path) -> list[Generated]:
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder: give one with <id>.png for every item of metadata.jsonl")
        samples = self._match({p.stem: p for p in folder.glob("*.png")}, str(folder))
        self.require_assets()
        return samples

    def _match(self, found: dict[str, Path], where: str) -> list[Generated]:
        items = self.items()
        wanted = {it.id for it in items}
        missing = [it.id for it in items if it.id not in found]
        extra = sorted(set(found) - wanted)
        if missing or extra:
            raise InputError(f"{where} does not match the {len(items)} items: "
                             + (f"missing {_listed([m + '.png' for m in missing])}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"not in metadata.jsonl: {_listed([e + '.png' for e in extra])}" if extra else "")
                             + ". Generate exactly one <id>.png per metadata line.")
        size = self.config.image_size
        for it in items:
            mode = decode_image(found[it.id], owner="task controlar-multigen", size=(size, size))
            if mode not in ("RGB", "L"):
                raise InputError(f"{found[it.id]} is a {mode} image; save 8-bit RGB PNGs.")
        return [Generated(it, found[it.id]) for it in items]

    # -- scoring -------------------------------------------------------------------------------
    def score(self, samples: Sequence[Generated], ctx) -> list[MetricValue]:
        kind, c = self.control_type, self.config
        metric = METRICS[kind]()
        scorer = {"canny": lambda: score_canny, "hed": lambda: hed_scorer(ctx.device),
                  "depth": lambda: depth_scorer(ctx.device)}[kind]()
        chunks = [samples[i:i + CHUNK] for i in range(0, len(samples), CHUNK)]
        clip = clip_scorer(ctx.device) if c.clip_score else None
        clip_metric = ClipScore()
        fid = None
        if c.fid:
            inception = fid_inception(ctx.device)
            ctx.log(f"clean-fid features of the {len(samples)} validation images")
            real = extract_cleanfid_features(inception, (np.stack([rgb_array(s.item.image) for s in chunk])
                                                         for chunk in chunks), CHUNK, ctx.device)
            fid = FrechetDistance(*feature_statistics(real), "clean_fid", version=FID_VERSION, log=ctx.log,
                                  description="clean-fid 'clean' mode FID of the generated vs the validation images "
                                              "(PIL bicubic resize to 299, NVIDIA TorchScript Inception)")
        with open(ctx.artifact("per_image.jsonl"), "w", encoding="utf-8") as rows:
            for chunk in ctx.progress(chunks, total=len(chunks), desc=self.metric):
                generated = np.stack([rgb_array(s.path) for s in chunk])
                controls = np.stack([control_array(s.item.control) for s in chunk])
                scores = np.asarray(scorer(generated, controls), dtype=np.float64)
                metric.update(torch.from_numpy(scores))
                clips = clip(generated, [s.item.prompt for s in chunk]).double() if clip else None
                if clip:
                    clip_metric.update(clips)
                if fid is not None:
                    fid.update(extract_cleanfid_features(inception, generated, CHUNK, ctx.device))
                for k, (s, value) in enumerate(zip(chunk, scores)):
                    row = {"id": s.item.id, "prompt": s.item.prompt, self.metric: float(value)}
                    if clip:
                        row["clip_score"] = float(clips[k])
                    rows.write(json.dumps(row) + "\n")
        return (metric.values() + (clip_metric.values() if clip else [])
                + (fid.values() if fid is not None else []))


def fid_inception(device: str):
    """clean-fid's TorchScript Inception (evaluations/clean_fid.py: `cleanfid.fid.compute_fid` defaults)."""
    return load_cleanfid_inception(None, device)[0]


def clip_scorer(device: str) -> ClipScorer:
    return ClipScorer.from_pretrained(device=device)


def score_canny(generated: np.ndarray, controls: np.ndarray) -> list[float]:
    """canny_f1score.py: F1 of Canny(generated) against each canny control."""
    return [edge_f1(control_maps.canny(image), control) for image, control in zip(generated, controls)]


def hed_scorer(device: str):
    model = control_maps.load_hed(device)

    def score(generated: np.ndarray, controls: np.ndarray) -> list[float]:
        """hed_ssim.py: MS-SSIM of HED(generated) against each HED control."""
        with torch.no_grad():
            x = torch.from_numpy(generated).permute(0, 3, 1, 2).float().to(device)
            return ms_ssim(model(x).cpu(), torch.from_numpy(controls)).tolist()

    return score


def depth_scorer(device: str):
    model = control_maps.DPTDepth.from_cache(device)

    def score(generated: np.ndarray, controls: np.ndarray) -> list[float]:
        """depth_rmse.py: RMSE of DPT depth (x 255 / max) against each depth control."""
        return depth_rmse(model(list(generated)), torch.from_numpy(controls)).tolist()

    return score


def _register(kind: str, what: str) -> type:
    cls = type(f"ControlARMultiGen{kind.title()}", (ControlARMultiGen,), {
        "control_type": kind, "primary_metric": METRICS[kind].metric_name, "__module__": __name__,
        "description": f"ControlAR controllability ({kind}): {what} of each generated image vs its control map "
                       "(MultiGen-20M-style data; needs the data" + (")" if kind == "canny" else " and annotator weights)")})
    return register_task(f"controlar-multigen-{kind}")(cls)


CONTROLAR_TASKS = [
    _register("canny", "F1 of OpenCV Canny(100, 200) edges"),
    _register("hed", "MS-SSIM of ControlNet-HED soft edges"),
    _register("depth", "RMSE of DPT-Large depth"),
]
