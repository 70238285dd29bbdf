"""The registered RQ-Transformer generators (class-to-image, ImageNet 256): `rq-transformer-480m`, `-821m`,
`-1.4b`, `-1.4b-rqvae50e`, `-3.8b`, one per released ImageNet archive of kakaobrain/rq-vae-transformer.

Each release is one `.tar.gz` holding `stage1/{model.pt,config.yaml}` (the RQ-VAE) and
`stage2/{model.pt,config.yaml}` (the RQ-Transformer), matched as upstream's README says they must be. The archive
is the weight file (its sha256 identifies a run); on first use the four members are copied out of it, by name and
as regular files only (no `extractall`), into `<archive>.d/`. `model.pt` is read with `torch.load(weights_only=True)`
and its `"state_dict"` entry taken, as `main_sampling_fid.py` does without `--ema`; `config.yaml` is read with
`yaml.safe_load` and its `arch` must be the architecture the method names (else one message lists the
differences). Defaults are `main_sampling_fid.py`'s: temperature / top-k / top-p from the stage-2 config's
`sampling` section (1.0 / 256 / 0.95 for the 480M and 1.4B archives as a third party read them; the same values
assumed for the others, see docs/imagegen-rqtransformer.md), no guidance, the transformer under fp16 autocast
(`amp=True`), decoding in float32, pixels x * 0.5 + 0.5 clamped to [0, 1] (upstream scores these floats;
the harness stores them as round(255 x) uint8).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from baselines.imagegen.checkpoints import combined_sha256, load_checkpoint_file, load_into
from baselines.imagegen.flowar_methods import precision_context
from baselines.imagegen.methods import ReleasedClassToImage
from baselines.imagegen.rqtransformer import RQSampler, RQTransformer, RQTransformerConfig, generate_rq
from baselines.imagegen.rqvae import RQVAEConfig, RQVAEDecoder, unused_prefixes
from harness.errors import ArbenchError
from harness.provenance import sha256_file
from harness.registry import register_method
from harness.settings import PositiveFloat, PositiveInt, Precision, TopP
from harness.weights import WeightSpec, register_weights

KAKAO_CDN = "https://twg.kakaocdn.net/brainrepo/models/RQVAE/"
RQ_LICENSE = ("CC-BY-NC-SA-4.0, NON-COMMERCIAL use only (weights; kakaobrain/rq-vae-transformer, code Apache-2.0); "
              "trained on ImageNet")
#: Shown with every run's settings (and so on the board's run page) and in `arbench weights list`.
RQ_LICENSE_SHORT = "CC-BY-NC-SA-4.0 (non-commercial)"
MEMBERS = ("stage1/model.pt", "stage1/config.yaml", "stage2/model.pt", "stage2/config.yaml")


def unpack_release(archive: Path) -> Path:
    """The folder holding the four members of a release archive (copied out once, beside the archive, or the
    archive itself when it is already such a folder). Only regular-file members whose path ends with one of
    `MEMBERS` are read, each written to a fixed name, so a crafted member name cannot write elsewhere."""
    archive = Path(archive)
    if archive.is_dir():
        missing = [m for m in MEMBERS if not (archive / m).is_file()]
        if missing:
            raise ArbenchError(f"{archive} lacks {', '.join(missing)}; give the release .tar.gz or the folder it "
                               "unpacks to (the one with stage1/ and stage2/).")
        return archive
    target = archive.with_name(archive.name + ".d")
    stamp = archive.stat()
    marker = {"size": stamp.st_size, "mtime": stamp.st_mtime}
    done = target / "unpacked.json"
    if done.is_file() and json.loads(done.read_text()) == marker:
        return target
    shutil.rmtree(target, ignore_errors=True)
    partial = archive.with_name(archive.name + ".d.partial")
    shutil.rmtree(partial, ignore_errors=True)
    found: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                wanted = next((m for m in MEMBERS if member.name == m or member.name.endswith("/" + m)), None)
                if wanted is None:
                    continue
                if not member.isfile() or wanted in found:
                    raise ArbenchError(f"{archive}: member {member.name} is not the one regular file {wanted}")
                out = partial / wanted
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 24)
                found[wanted] = member.name
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ArbenchError(f"{archive} could not be read as a release archive ({exc}). Download it again.") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-unpacked stays behind
        raise
    missing = [m for m in MEMBERS if m not in found]
    if missing:
        shutil.rmtree(partial, ignore_errors=True)
        raise ArbenchError(f"{archive} has no {', '.join(missing)}: not an RQ-Transformer release archive.")
    (partial / "unpacked.json").write_text(json.dumps(marker))
    partial.rename(target)
    return target


def read_yaml(path: Path) -> dict:
    """A released `config.yaml` (OmegaConf.save output), parsed with the safe loader only."""
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ArbenchError(f"{path} could not be read as a YAML config ({exc}).") from exc
    if not isinstance(data, dict) or not isinstance(data.get("arch"), dict):
        raise ArbenchError(f"{path} has no `arch` section: not an rq-vae-transformer config.yaml.")
    return data


def read_rq_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The `"state_dict"` entry of an upstream checkpoint (`torch.load(weights_only=True)`), as upstream's
    `load_model(path, ema=False)` takes it; other entries (`state_dict_ema`, optimizer, epoch) are not read."""
    saved = load_checkpoint_file(path, what)
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(saved)[:8] if isinstance(saved, dict) else type(saved).__name__
        raise ArbenchError(f"{path} holds no 'state_dict' of tensors (found {keys}); upstream's checkpoints "
                           "save {'state_dict': ...}.")
    return state


def config_mismatches(expected: Any, found: Any) -> list[str]:
    return [f"{f.name} is {getattr(found, f.name)!r}, expected {getattr(expected, f.name)!r}"
            for f in dataclasses.fields(expected) if getattr(found, f.name) != getattr(expected, f.name)]


@dataclass
class RQTransformerSettings:
    """`main_sampling_fid.py`'s sampler (the stage-2 config's `sampling` section) and precision."""

    temperature: PositiveFloat = 1.0
    top_k: PositiveInt = 256
    top_p: TopP = 0.95
    precision: Precision = "fp16-autocast"  # upstream: model_ar.sample(..., amp=True); "fp32" for float32
    release_weights: str = ""  # the release .tar.gz (or the folder it unpacks to) instead of the cached one

    def sampler(self) -> RQSampler:
        return RQSampler(self.temperature, self.top_k, self.top_p)


class RQTransformerMethod(ReleasedClassToImage):
    """A released RQ-Transformer archive: 8 x 8 positions x 4 residual codes, 256 sequential steps, no guidance."""

    family = "raster-ar"  # as the reported RQ-Transformer rows (harness/reported_results.toml)
    Config = RQTransformerSettings
    spec: ClassVar[WeightSpec]
    transformer_config: ClassVar[RQTransformerConfig] = RQTransformerConfig()
    vae_config: ClassVar[RQVAEConfig] = RQVAEConfig()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "weights_license": RQ_LICENSE_SHORT}

    def weight_files(self):
        if getattr(self, "_files", None) is None:
            explicit = self.config.release_weights
            if explicit and Path(explicit).expanduser().is_dir():  # an unpacked release: its four files' digests
                folder = unpack_release(Path(explicit).expanduser())
                self._files = [(folder, combined_sha256(sha256_file(folder / m) for m in MEMBERS))]
            else:
                self._files = self.locate_all((self.spec, explicit))
        return self._files

    def load(self) -> None:
        precision_context(self.config.precision, self.device, self.name)  # refuse fp16 on CPU before reading
        ((path, _),) = self.weight_files()
        folder = unpack_release(path)
        stage1, stage2 = read_yaml(folder / "stage1/config.yaml"), read_yaml(folder / "stage2/config.yaml")
        try:
            vae_config, config = RQVAEConfig.from_arch(stage1["arch"]), RQTransformerConfig.from_arch(stage2["arch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArbenchError(f"{self.name}: {folder}'s config.yaml is not a released ImageNet RQ-VAE / "
                               f"RQ-Transformer config ({type(exc).__name__}: {exc}).") from exc
        problems = config_mismatches(self.transformer_config, config) + config_mismatches(self.vae_config, vae_config)
        if problems:
            raise ArbenchError(f"{self.name}: {path} is not the release this method names: {'; '.join(problems[:8])}. "
                               "Check the file against `arbench weights list`.")
        self.check_sampling(stage2.get("sampling"))
        vae = RQVAEDecoder(vae_config)
        load_into(vae, read_rq_state_dict(folder / "stage1/model.pt", "an RQ-VAE checkpoint"),
                  f"{self.name} RQ-VAE (stage1/model.pt)", unused_prefixes(vae_config))
        model = RQTransformer(config)
        load_into(model, read_rq_state_dict(folder / "stage2/model.pt", "an RQ-Transformer checkpoint"),
                  f"{self.name} (stage2/model.pt)")
        self._model, self._vae = model.to(self.device).eval(), vae.to(self.device).eval()

    def check_sampling(self, released: Any) -> None:
        """Warn when the archive's own `sampling` section (what upstream's script would use) differs from the
        settings of this run; the settings win (they are in the signature)."""
        if not isinstance(released, dict):
            return
        ours = {"temp": self.config.temperature, "top_k": self.config.top_k, "top_p": self.config.top_p}
        theirs = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in released.items() if k in ours}
        differ = {k: (theirs[k], ours[k]) for k in theirs if theirs[k] != ours[k]}
        if differ:
            warnings.warn(f"{self.name}: the archive's stage2/config.yaml samples with "
                          f"{ {k: v[0] for k, v in differ.items()} }, this run with { {k: v[1] for k, v in differ.items()} }",
                          stacklevel=2)

    def images(self, labels, generators):
        embed = self._vae.code_embeddings
        with precision_context(self.config.precision, self.device, self.name):
            codes = generate_rq(self._model, labels, generators, self.config.sampler(), embed)
        images = torch.cat([self._vae(codes[i:i + 1]) for i in range(codes.shape[0])])  # upstream: one at a time
        pixels = (images * 0.5 + 0.5).clamp(0, 1).mul(255).round()
        return pixels.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()


def _rq(size: str, archive: str, md5: str, transformer: RQTransformerConfig, yaml_name: str, fid: str) -> type:
    name = f"rq-transformer-{size.lower()}"
    label = size.replace("-rqvae50e", " with the 50-epoch RQ-VAE")
    spec = register_weights(WeightSpec(
        name, f"rq-transformer/{archive}", f"{KAKAO_CDN}{md5}/{archive}", None, RQ_LICENSE,
        f"RQ-Transformer {label} + its RQ-VAE (8x8x4, codebook 16384 x 256), class-conditional ImageNet 256; one "
        f"archive holding stage1/ and stage2/ (model.pt + config.yaml); architecture as upstream's {yaml_name}; "
        f"the path segment {md5} is the archive's MD5 (a third party checked the 480M one); no sha256 published"))
    cls = type(f"RQTransformer{size.replace('.', '_').replace('-', '_')}", (RQTransformerMethod,), {
        "description": f"RQ-Transformer {label} (README FID {fid}), 8x8 positions x 4 residual codes (spatial + depth "
                       f"transformer), top-k 256, top-p 0.95, temperature 1.0, no guidance; weights {archive}, "
                       f"{RQ_LICENSE_SHORT}",
        "spec": spec, "transformer_config": transformer, "Config": RQTransformerSettings, "__module__": __name__})
    return register_method(name)(cls)


RQ_CONFIGS = {
    "480M": RQTransformerConfig(embed_dim=1536, body_layers=12, head_layers=4, n_head=24),
    "821M": RQTransformerConfig(embed_dim=1536, body_layers=24, head_layers=4, n_head=24),
    "1.4B": RQTransformerConfig(embed_dim=1536, body_layers=42, head_layers=6, n_head=24),
    "3.8B": RQTransformerConfig(embed_dim=2560, body_layers=42, head_layers=6, n_head=40),
}
RQ_METHODS = [
    _rq("480M", "imagenet_480M.tar.gz", "7518a004fe39120fcffbba76005dc6c3", RQ_CONFIGS["480M"],
        "in256-rqtransformer-8x8x4-480M.yaml", "15.72"),
    _rq("821M", "imagenet_821M.tar.gz", "dcd39292319104da5577dec3956bfdcc", RQ_CONFIGS["821M"],
        "in256-rqtransformer-8x8x4-800M.yaml", "13.11"),
    _rq("1.4B", "imagenet_1.4B.tar.gz", "f5cf4e5f3f0b5088d52cbb5e85c1077f", RQ_CONFIGS["1.4B"],
        "in256-rqtransformer-8x8x4-1400M.yaml", "11.56; 4.45 with 5% rejection sampling"),
    _rq("1.4B-rqvae50e", "imagenet_1.4B_rqvae_50e.tar.gz", "6714b47bb9382076923590eff08b1ee5", RQ_CONFIGS["1.4B"],
        "in256-rqtransformer-8x8x4-1400M.yaml with the 50-epoch RQ-VAE", "8.71; 3.89 with 5% rejection sampling"),
    _rq("3.8B", "imagenet_3.8B_rqvae_50e.tar.gz", "e1ee2fef2928f7fd31f53a8348f08b88", RQ_CONFIGS["3.8B"],
        "in256-rqtransformer-8x8x4-3800M.yaml with the 50-epoch RQ-VAE", "7.55; 3.80 with 5% rejection sampling"),
]
