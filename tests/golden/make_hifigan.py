"""Golden outputs of NeMo's HiFi-GAN generator from NeMo's own code (issue 22: TalkNet 2's vocoder).

Upstream: NVIDIA/NeMo@77be76349901d0dd99ad6778509ef5c0663a65c3 (tag v1.8.2, the release TalkNet's goldens come
from; Apache-2.0, HiFi-GAN parts MIT from jik876/hifi-gan), and for the layout the released `tts_hifigan`
1.0.0rc1 file was saved in, NVIDIA/NeMo@977b9a2c8bee5f0575935cde9527b9fe2b7badfe (tag v1.0.0rc1). Needs only
these files of each checkout:

    git archive v1.8.2 nemo/collections/tts/modules/hifigan_modules.py \
        examples/tts/conf/hifigan/model/generator/v1.yaml | tar -x -C /tmp/up-nemo-hifigan
    git archive v1.0.0rc1 nemo/collections/tts/modules/hifigan_modules.py | tar -x -C /tmp/up-nemo-rc1
    python tests/golden/make_hifigan.py /tmp/up-nemo-hifigan /tmp/up-nemo-rc1

Upstream's `Generator`, `ResBlock1`, `ResBlock2` run as they are, weight norm included (`weight_g`/`weight_v`
parameters, as the released file stores them). Stubbed, import-only: `nemo.core.classes(.module).NeuralModule`
(torch.nn.Module), `nemo.core.classes.common.typecheck` (a decorator that returns the function) and the
`nemo.core.neural_types` names (used only in type annotations).

Stored (no weights: the test rebuilds them from `SEED` and the stored names with golden_weights.seeded_state):
- `layout_small`: upstream's small generator's state-dict names and shapes (`SMALL`, both resblock kinds are
  covered by `layout_small2`), filled with `seeded_fill(SEED)`; `audio_0`, `audio_1`: its waveforms from the two
  mels TalkNet's golden produced (tests/golden/talknet, upstream TalkNet's own output, 10 mels); `audio_batch`:
  both mels cut to one length as a batch of two.
- `layout_small2` / `audio2_0`: the same with `resblock: 2` (ResBlock2) and `SMALL2`.
- `layout_v1` (v1.8.2, `generator/v1.yaml`, the size `tts_hifigan` was trained at) and `layout_rc1` (v1.0.0rc1's
  Generator at that size, whose `resblocks` list is flat: the names the released file has).
Also checked here (asserted, not stored): v1.0.0rc1's Generator, given the same weights under its flat names,
gives the same waveform as v1.8.2's (so the renaming rule of v1.8.2's `HifiGanModel.load_state_dict` is exact).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden, seeded_fill  # noqa: E402

UPSTREAM = "NVIDIA/NeMo@77be76349901d0dd99ad6778509ef5c0663a65c3"
UPSTREAM_RC1 = "NVIDIA/NeMo@977b9a2c8bee5f0575935cde9527b9fe2b7badfe"
OUT = Path(__file__).resolve().parent / "hifigan"
TALKNET = Path(__file__).resolve().parent / "talknet" / "golden.npz"
SEED = 2205
SMALL = dict(resblock=1, upsample_rates=[4, 2, 2], upsample_kernel_sizes=[8, 4, 4], upsample_initial_channel=32,
             resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], initial_input_size=10)
SMALL2 = dict(resblock=2, upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], upsample_initial_channel=16,
              resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 2], [2, 6], [3, 12]],
              initial_input_size=10)


def stub_nemo() -> None:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m

    module("nemo.core.classes", NeuralModule=nn.Module)
    module("nemo.core.classes.module", NeuralModule=nn.Module)
    module("nemo.core.classes.common", typecheck=lambda *a, **k: (lambda f: f))
    module("nemo.core.neural_types.elements", AudioSignal=lambda *a, **k: None,
           MelSpectrogramType=lambda *a, **k: None, VoidType=lambda *a, **k: None)
    module("nemo.core.neural_types.neural_type", NeuralType=lambda *a, **k: None)


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def layout(module: nn.Module) -> np.ndarray:
    return np.array(json.dumps({k: list(v.shape) for k, v in module.state_dict().items()}))


def flat_names(state: dict[str, torch.Tensor], num_kernels: int) -> dict[str, torch.Tensor]:
    """v1.8.2 names -> v1.0.0rc1's flat `resblocks.{i * num_kernels + j}` (the inverse of v1.8.2's rule)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "resblocks":
            k = ".".join(["resblocks", str(int(parts[1]) * num_kernels + int(parts[2]))] + parts[3:])
        out[k] = v
    return out


def main(root: Path, root_rc1: Path) -> None:
    import yaml

    stub_nemo()
    new = load_module(root / "nemo/collections/tts/modules/hifigan_modules.py", "hifigan_v182")
    old = load_module(root_rc1 / "nemo/collections/tts/modules/hifigan_modules.py", "hifigan_rc1")
    v1 = yaml.safe_load((root / "examples/tts/conf/hifigan/model/generator/v1.yaml").read_text())
    assert v1.pop("_target_") == "nemo.collections.tts.modules.hifigan_modules.Generator"
    talknet = np.load(TALKNET)
    mels = [torch.from_numpy(talknet[f"mel_{i}"]) for i in range(2)]  # upstream TalkNet's mels, (1, 10, T)

    arrays: dict[str, np.ndarray] = {"seed": np.array(SEED), "config_v1": np.array(json.dumps(v1)),
                                     "layout_v1": layout(new.Generator(**v1)),
                                     "layout_rc1": layout(old.Generator(**v1)),
                                     "upstream_rc1": np.array(UPSTREAM_RC1)}
    torch.manual_seed(0)
    with torch.no_grad():
        for tag, cfg in (("", SMALL), ("2", SMALL2)):
            gen = seeded_fill(new.Generator(**cfg), SEED)
            arrays[f"config_small{tag}"] = np.array(json.dumps(cfg))
            arrays[f"layout_small{tag}"] = layout(gen)
            for i, mel in enumerate(mels):
                arrays[f"mel_{i}"] = mel.numpy()
                audio = gen(x=mel)
                arrays[f"audio{tag}_{i}"] = audio.numpy()
                print(f"small{tag} mel {i}: {tuple(mel.shape)} -> {tuple(audio.shape)}, |audio| mean "
                      f"{float(audio.abs().mean()):.3f}, max {float(audio.abs().max()):.3f}, "
                      f"std {float(audio.std()):.3f}")
            if not tag:
                n = min(m.shape[-1] for m in mels)
                batch = torch.cat([m[..., :n] for m in mels])
                arrays["audio_batch"] = gen(x=batch).numpy()
                # v1.0.0rc1's Generator (no initial_input_size: 80 mels) on the same weights under its names.
                big = {**cfg, "initial_input_size": 80}
                gen80 = seeded_fill(new.Generator(**big), SEED)
                rc1 = old.Generator(**{k: v for k, v in big.items() if k != "initial_input_size"}).eval()
                rc1.load_state_dict(flat_names(gen80.state_dict(), len(cfg["resblock_kernel_sizes"])), strict=True)
                mel80 = torch.randn(1, 80, 20, generator=torch.Generator().manual_seed(SEED))
                assert torch.equal(rc1(x=mel80), gen80(x=mel80)), "v1.0.0rc1 and v1.8.2 generators differ"
    save_golden(OUT, UPSTREAM, arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
