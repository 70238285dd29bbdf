"""Golden outputs of Flowtron and WaveGlow from upstream's own code (issue 22).

Upstream: NVIDIA/flowtron@d149bc466b8325026aeb68aa2fef24337e7463b2 (Apache-2.0) and the WaveGlow its tacotron2
submodule (NVIDIA/tacotron2@6f435f7) pins, NVIDIA/waveglow@2fd4e63e2918012f55eac2c8a8e75622a39741be (BSD-3).

    python tests/golden/make_flowtron.py /path/to/flowtron-checkout /path/to/waveglow-checkout

Runs in a venv with upstream's text dependencies (`inflect`, `unidecode`) on top of the project's.

Compared (tests/test_tts_flowtron.py):
- text -> symbol ids through upstream's `Data.get_text` (flowtron_cleaners, CMUdict, heteronyms) at p_arpabet 0
  and 1, and at 0.5 after `random.seed(s)` (upstream draws from the process-wide `random`; ARBench from a
  `random.Random(s)`, the same sequence). The CMUdict lines those sentences can touch are stored (with CMU's
  licence header) so the test needs no 3.7 MB dictionary.
- Flowtron at a small size (text dim 16, speaker dim 8, hidden 32, attention 24, 2 flows, 80 mels, 3 speakers)
  on seeded weights: `infer` from a fixed z at two gate thresholds (one never fires, one stops mid-way), and the
  teacher-forced `forward` of a padded batch of 2 (z and every step's log s, gate logits).
- WaveGlow at a small size (6 flows, early output every 4, WN 3 layers x 16 channels) on seeded weights in its
  released weight-normalised layout: `infer` with sigma 0.8 on a fixed mel, upstream's noise drawn from the
  global generator after `torch.manual_seed(seed)` (ARBench draws the same values from a seeded
  `torch.Generator`). Also stored: every global the pickled upstream module names (`torch.save({'model': m})`,
  zip and legacy formats), which ARBench's allow-list must cover.

Stubbed (import-only or device-only, not the compared functions): `librosa` (imported by audio_processing.py,
used only for mel extraction), `torch.cuda.LongTensor` / `torch.cuda.FloatTensor` (upstream allocates masks and
noise on CUDA; here the same calls make CPU tensors), `torch.qr` (removed from torch since; `torch.linalg.qr`,
used only for WaveGlow's initial weights, which the seeded ones replace).
"""

from __future__ import annotations

import io
import json
import os
import pickletools
import random
import re
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import layout, save_golden, seeded_fill  # noqa: E402

UPSTREAM = ("NVIDIA/flowtron@d149bc466b8325026aeb68aa2fef24337e7463b2 + "
            "NVIDIA/waveglow@2fd4e63e2918012f55eac2c8a8e75622a39741be")
OUT = Path(__file__).resolve().parent / "flowtron"
SEED = 22
SENTENCES = [
    "It is well known that deep generative models have a rich latent space!",
    "Dr. Smith paid $3.50 for 2 apples at 7:30pm on May 1st, 1999.",
    "The NASA and FBI agents' reports -- no. 42 -- were read aloud; it's the 1980's.",
    "She'll record the record in 2008, 1900 and 2000: twenty-two well-known U.S.A. readers.",
    "We measured 70F, 12.5 km, £1,200 and $5 million in the 1800s with CDs.",
    "Turn left on {HH AW1 S T AH0 N} Street, then   walk   3 blocks.",
]
FLOWTRON_SMALL = dict(n_speakers=3, n_speaker_dim=8, n_text=185, n_text_dim=16, n_flows=2, n_mel_channels=80,
                      n_hidden=32, n_attn_channels=24, n_lstm_layers=2, use_gate_layer=True, mel_encoder_n_hidden=16,
                      n_components=0, fixed_gaussian=True, mean_scale=0.0, dummy_speaker_embedding=False,
                      use_cumm_attention=False)
WAVEGLOW_SMALL = dict(n_mel_channels=80, n_flows=6, n_group=8, n_early_every=4, n_early_size=2,
                      WN_config=dict(n_layers=3, n_channels=16, kernel_size=3))


def stub_upstream_imports() -> None:
    librosa = types.ModuleType("librosa")
    librosa.filters = types.ModuleType("librosa.filters")
    librosa.filters.mel = None
    librosa.util = types.ModuleType("librosa.util")
    librosa.util.pad_center = librosa.util.tiny = None
    sys.modules.update({"librosa": librosa, "librosa.filters": librosa.filters, "librosa.util": librosa.util})
    torch.cuda.LongTensor = lambda *size: torch.empty(*size, dtype=torch.long)
    torch.cuda.FloatTensor = lambda *size: torch.empty(*size, dtype=torch.float32)
    torch.qr = torch.linalg.qr  # removed from torch; WaveGlow's 1x1 conv init (overwritten by the seeded weights)


def text_goldens(flowtron_dir: Path) -> dict:
    from data import Data  # upstream

    from text import cmudict as upstream_cmudict  # upstream

    holder = types.SimpleNamespace(cmudict=upstream_cmudict.CMUDict("data/cmudict_dictionary", keep_ambiguous=False),
                                   text_cleaners=["flowtron_cleaners"])
    ids, cases = [], []
    for i, sentence in enumerate(SENTENCES):
        for p, seed in ((0.0, -1), (1.0, -1), (0.5, SEED + i)):
            holder.p_arpabet = p
            if seed >= 0:
                random.seed(seed)
            ids.append(np.asarray(Data.get_text(holder, sentence).numpy(), dtype=np.int16))
            cases.append((i, p, seed))
    # The dictionary lines these sentences can look up: every run of letters/apostrophes (before and after cleaning), with and without a
    # trailing 's, upper-cased, and the letters of dotted acronyms joined.
    from text import _clean_text  # upstream

    candidates = set()
    for sentence in SENTENCES:
        for token in re.findall(r"[A-Za-z'.]+", sentence + " " + _clean_text(sentence, ["flowtron_cleaners"])):
            for word in {token, token.replace(".", ""), *token.split(".")}:
                word = word.strip("'").upper()
                candidates |= {word, word[:-2] if word.endswith("'S") else word, word.rstrip("S")}
    raw = (flowtron_dir / "data" / "cmudict_dictionary").read_text(encoding="latin-1").splitlines()
    subset = [line for line in raw if line.startswith(";;;") and "#" in line]  # CMU's licence header
    subset += [line for line in raw if line[:1].isalpha() or line[:1] == "'"
               if re.sub(r"\([0-9]+\)", "", line.split("  ")[0]) in candidates]
    offsets = np.cumsum([0] + [len(x) for x in ids])
    return {"text_sentences": np.array(SENTENCES), "text_ids": np.concatenate(ids), "text_offsets": offsets, "text_cases": np.array(cases, dtype=np.float64),
            "cmudict_subset": np.array("\n".join(subset) + "\n")}


def flowtron_goldens() -> dict:
    from flowtron import Flowtron  # upstream

    torch.manual_seed(0)
    model = seeded_fill(Flowtron(**FLOWTRON_SMALL), SEED)
    gen = torch.Generator().manual_seed(SEED)
    text = torch.randint(10, 185, (1, 17), generator=gen)
    residual = torch.randn(1, 80, 30, generator=gen) * 0.5
    speaker = torch.tensor([1])
    gates = []
    hook = model.flows[1].ar_step.gate_layer.register_forward_hook(lambda m, i, o: gates.append(torch.sigmoid(o).item()))
    with torch.no_grad():
        mel_full, _ = model.infer(residual.clone(), speaker, text, gate_threshold=1.0)
    hook.remove()
    gates = np.array(gates)
    # a threshold that the gate first passes mid-way (the running maximum rises after frame 5)
    k = next(k for k in range(6, len(gates) - 3) if gates[k] > gates[:k].max())
    threshold = float(np.float32(gates[:k].max()))
    with torch.no_grad():
        mel_gated, _ = model.infer(residual.clone(), speaker, text, gate_threshold=threshold)
    assert 0 < mel_gated.shape[2] < mel_full.shape[2]
    # teacher-forced forward on a padded batch of 2 (texts sorted by length, as upstream's collate does)
    texts = torch.randint(10, 185, (2, 15), generator=gen)
    text_lens = torch.tensor([15, 11])
    texts[1, 11:] = 0
    mel_lens = torch.tensor([16, 20])
    mels = torch.randn(2, 80, 20, generator=gen)
    mels[0, :, 16:] = 0
    speakers = torch.tensor([0, 2])
    with torch.no_grad():
        z, log_s, gate, _, _, _, _, _ = model(mels.clone(), speakers, texts, text_lens, mel_lens)
    released = json.loads((Path.cwd() / "config.json").read_text())["model_config"]
    released_layout = layout(Flowtron(**released))
    return {"flowtron_layout": np.array(layout(model)), "flowtron_layout_released": np.array(released_layout), "ft_text": text.numpy(), "ft_residual": residual.numpy(),
            "ft_speaker": speaker.numpy(), "ft_mel_full": mel_full.numpy(), "ft_gate_threshold": np.float64(threshold),
            "ft_mel_gated": mel_gated.numpy(), "fw_texts": texts.numpy(), "fw_text_lens": text_lens.numpy(),
            "fw_mels": mels.numpy(), "fw_mel_lens": mel_lens.numpy(), "fw_speakers": speakers.numpy(),
            "fw_z": z.numpy(), "fw_log_s0": log_s[0].numpy(), "fw_log_s1": log_s[1].numpy(), "fw_gate": gate.numpy()}


def pickle_globals(blob: bytes) -> list[str]:
    """Every module.name a torch.save file's pickles name (GLOBAL / STACK_GLOBAL), zip or legacy format, less
    torch's own rebuild functions, storages and containers (allowed by `weights_only` itself)."""
    if blob[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            files = [io.BytesIO(zf.read(n)) for n in zf.namelist() if n.endswith(".pkl")]
        count = 1
    else:  # legacy: magic number, protocol, system info, the object, storage keys, then raw storages
        files, count = [io.BytesIO(blob)], 5
    names = set()
    for f in files:
        for _ in range(count):
            strings = []
            for op, arg, _pos in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.add(arg.replace(" ", "."))
                elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                    strings.append(arg)
                elif op.name == "STACK_GLOBAL":
                    names.add(".".join(strings[-2:]))
    return sorted(n for n in names if not n.startswith(("torch._utils.", "collections.OrderedDict", "torch.FloatStorage",
                                                          "torch.LongStorage", "torch.storage.")))


def waveglow_goldens() -> dict:
    from glow import WaveGlow  # upstream

    torch.manual_seed(0)
    model = seeded_fill(WaveGlow(**WAVEGLOW_SMALL), SEED + 1)
    gen = torch.Generator().manual_seed(SEED + 2)
    mel = torch.randn(1, 80, 6, generator=gen)
    torch.manual_seed(SEED + 3)
    with torch.no_grad():
        audio = model.infer(mel, sigma=0.8)
    names = set()
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save({"model": model, "iteration": 1}, buf, _use_new_zipfile_serialization=not legacy)
        names |= set(pickle_globals(buf.getvalue()))
    released = json.loads(Path(sys.modules["glow"].__file__).with_name("config.json").read_text())["waveglow_config"]
    released_layout = layout(WaveGlow(**released))
    return {"waveglow_layout": np.array(layout(model)), "waveglow_layout_released": np.array(released_layout), "wg_mel": mel.numpy(), "wg_noise_seed": np.int64(SEED + 3),
            "wg_audio": audio.numpy(), "wg_pickle_globals": np.array(sorted(names))}


def main(flowtron_dir: str, waveglow_dir: str) -> None:
    flowtron_dir, waveglow_dir = Path(flowtron_dir).resolve(), Path(waveglow_dir).resolve()
    stub_upstream_imports()
    os.chdir(flowtron_dir)  # upstream's text package reads data/heteronyms and data/cmudict_dictionary from here
    sys.path[:0] = [str(flowtron_dir), str(waveglow_dir)]
    arrays = {**text_goldens(flowtron_dir), **flowtron_goldens(), **waveglow_goldens()}
    save_golden(OUT, UPSTREAM, arrays)


if __name__ == "__main__":
    main(*sys.argv[1:3])
