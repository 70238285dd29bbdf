"""Golden outputs of TalkNet 2's three networks from NeMo's own code (issue 22).

Upstream: NVIDIA/NeMo@77be76349901d0dd99ad6778509ef5c0663a65c3 (tag v1.8.2, the last release with TalkNet;
Apache-2.0). Needs only these files of a checkout (e.g. `git archive v1.8.2 <files> | tar -x -C /tmp/up-nemo`):
nemo/collections/asr/parts/submodules/jasper.py, nemo/collections/asr/parts/utils/activations.py,
nemo/collections/asr/parts/submodules/tdnn_attention.py, nemo/collections/asr/modules/conv_asr.py,
nemo/collections/tts/modules/talknet.py, nemo/collections/tts/models/talknet.py,
nemo/collections/asr/data/audio_to_text.py, nemo/collections/common/data/vocabs.py, examples/tts/conf/talknet-{durs,pitch,spect}.yaml.

    PYTHONPATH=<dir with omegaconf> python tests/golden/make_talknet.py /tmp/up-nemo

Upstream's modules run as they are: `ConvASREncoder` / `JasperBlock` / `MaskedConv1d` / `SqueezeExcite`,
`GaussianEmbedding`, `MaskedInstanceNorm1d`, `StyleResidual`. The three model classes (`TalkNetDursModel`,
`TalkNetPitchModel`, `TalkNetSpectModel`) derive from NeMo's `ModelPT` (Lightning, Hydra), so their
`__init__` is mirrored here attribute for attribute (the released state-dict names, checked at full size
against ARBench's), while their `forward` and `generate_spectrogram` are upstream's functions taken from
models/talknet.py's source and bound to those modules. Likewise `AudioToCharWithDursF0Dataset`'s static
`merge`, `repeat_merge` and `interleave` are upstream's functions taken from audio_to_text.py's source (the
rest of that module needs webdataset, librosa and NeMo's ASR stack).

Stubbed, import-only: `nemo.utils.logging` (Python's logging), `nemo.core.classes.common.typecheck` (a
decorator that returns the function), `nemo.core.classes.exportable.Exportable`, `nemo.core.classes.module.
NeuralModule` (torch.nn.Module) and the `nemo.core.neural_types` names (used only in type annotations of
`@typecheck`). The vocabulary passed to `GaussianEmbedding` is an object with `labels` and `pad` (NeMo's
`Phonemes` vocabulary needs g2p_en and NLTK data; its size, 59, is used for the full-size layouts). For the
vocabulary comparison see `vocabulary_goldens`.

Compared (tests/test_tts_talknet.py), on seeded weights (stored: the networks are small): at a small size
(d_char 16; durations encoder 3 blocks, pitch 2, mel 3, separable, squeeze-excite, 24-48 channels) upstream's
`generate_spectrogram` on two blank-interleaved token rows (durations, F0 and the mel), and each network's
`forward` on a right-padded batch of two (values on valid positions). At the released sizes (examples/tts/conf
talknet-{durs,pitch,spect}.yaml) every parameter name and shape. `vocabs.Phonemes`' label table, special ids
and `encode` on fixed G2P outputs, for the released flags and for a variant (stresses, no spaces before
punctuation, padding with spaces, blank last but one).
"""

from __future__ import annotations

import ast
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden, seeded_fill  # noqa: E402

UPSTREAM = "NVIDIA/NeMo@77be76349901d0dd99ad6778509ef5c0663a65c3"
OUT = Path(__file__).resolve().parent / "talknet"
SEED = 2104
N_VOCAB, PAD, BLANK = 59, 56, 58  # Phonemes(punct, no stresses, add_blank_at="last"): 56 labels, pad, oov, blank

SMALL = {
    "durs": [dict(filters=24, repeat=1, kernel=[3], stride=[1], dilation=[1], dropout=0.1, residual=True,
                  separable=True),
             dict(filters=24, repeat=2, kernel=[5], stride=[1], dilation=[1], dropout=0.1, residual=True,
                  separable=True, se=True, se_reduction_ratio=8),
             dict(filters=32, repeat=1, kernel=[1], stride=[1], dilation=[1], dropout=0.1, residual=True)],
    "pitch": [dict(filters=24, repeat=2, kernel=[7], stride=[1], dilation=[1], dropout=0.1, residual=True,
                   separable=True, se=True, se_reduction_ratio=8),
              dict(filters=32, repeat=1, kernel=[1], stride=[1], dilation=[1], dropout=0.1, residual=True)],
    "spect": [dict(filters=24, repeat=2, kernel=[3], stride=[1], dilation=[1], dropout=0.1, residual=True,
                   separable=True),
              dict(filters=48, repeat=2, kernel=[9], stride=[1], dilation=[1], dropout=0.1, residual=True,
                   separable=True, se=True, se_reduction_ratio=8),
              dict(filters=32, repeat=1, kernel=[1], stride=[1], dilation=[1], dropout=0.1, residual=True)],
}
D_CHAR_SMALL, N_MELS_SMALL, F0_MEAN, F0_STD = 16, 10, 178.7767791748047, 33.51659393310547


def stub_nemo() -> None:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    module("nemo.utils", logging=logging.getLogger("nemo"))
    module("nemo.core.classes.common", typecheck=lambda *a, **k: (lambda f: f))
    module("nemo.core.classes.exportable", Exportable=type("Exportable", (), {}))
    module("nemo.core.classes.module", NeuralModule=nn.Module)
    names = ("AcousticEncodedRepresentation", "LengthsType", "LogitsType", "LogprobsType", "NeuralType",
             "SpectrogramType")
    module("nemo.core.neural_types", **{n: (lambda *a, **k: None) for n in names})


def upstream_functions(path: Path, owner: str, names: set[str], env: dict) -> dict:
    """The named methods of class `owner` in upstream's file, compiled from its source in `env` (decorators
    included, which resolve to the stubs above)."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner)
    found = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            ns: dict = {}
            exec(compile(ast.Module([node], []), str(path), "exec"), env, ns)
            found[node.name] = ns[node.name]
    assert set(found) == names, (owner, names - set(found))
    return found


def main(root: Path) -> None:
    sys.path.insert(0, str(root))
    stub_nemo()
    env = {"torch": torch, "F": F, "nn": nn}
    data = upstream_functions(root / "nemo/collections/asr/data/audio_to_text.py", "AudioToCharWithDursF0Dataset",
                              {"merge", "repeat_merge", "interleave"}, env)
    dataset = type("AudioToCharWithDursF0Dataset", (), dict(data))  # static/class methods keep their decorators
    # `GaussianEmbedding` calls AudioToCharWithDursF0Dataset.repeat_merge: its module is a stub holding the class
    # with upstream's functions.
    sys.modules["nemo.collections.asr.data.audio_to_text"] = types.ModuleType("audio_to_text")
    sys.modules["nemo.collections.asr.data.audio_to_text"].AudioToCharWithDursF0Dataset = dataset
    from nemo.collections.asr.modules.conv_asr import ConvASREncoder
    from nemo.collections.tts.modules import talknet as talknet_modules

    stubs = {"typecheck": lambda *a, **k: (lambda f: f), "NeuralType": lambda *a, **k: None,
             "TokenIndex": lambda: None, "LengthsType": lambda: None, "RegressionValuesType": lambda: None,
             "AudioToCharWithDursF0Dataset": dataset}
    models_py = root / "nemo/collections/tts/models/talknet.py"
    fns = {owner: upstream_functions(models_py, owner, names, {**env, **stubs}) for owner, names in (
        ("TalkNetDursModel", {"forward"}), ("TalkNetPitchModel", {"forward"}),
        ("TalkNetSpectModel", {"forward", "generate_spectrogram"}))}
    vocab = types.SimpleNamespace(labels=[str(i) for i in range(N_VOCAB)], pad=PAD, blank=BLANK)

    def encoder(d_char, layers):
        return ConvASREncoder(jasper=layers, activation="relu", feat_in=d_char, conv_mask=True)

    class Durs(nn.Module):  # TalkNetDursModel.__init__
        forward = fns["TalkNetDursModel"]["forward"]

        def __init__(self, d_char, layers):
            super().__init__()
            self.vocab = vocab
            self.embed = nn.Embedding(len(vocab.labels), d_char)
            self.encoder = encoder(d_char, layers)
            self.proj = nn.Conv1d(layers[-1]["filters"], 1, kernel_size=1)

    class Pitch(nn.Module):  # TalkNetPitchModel.__init__
        forward = fns["TalkNetPitchModel"]["forward"]

        def __init__(self, d_char, layers):
            super().__init__()
            self.embed = talknet_modules.GaussianEmbedding(vocab, d_char)
            self.encoder = encoder(d_char, layers)
            self.sil_proj = nn.Conv1d(layers[-1]["filters"], 1, kernel_size=1)
            self.body_proj = nn.Conv1d(layers[-1]["filters"], 1, kernel_size=1)
            self.f0_mean, self.f0_std = F0_MEAN, F0_STD

    class Spect(nn.Module):  # TalkNetSpectModel.__init__ (less the training-only `preprocessor`)
        forward = fns["TalkNetSpectModel"]["forward"]
        generate_spectrogram = fns["TalkNetSpectModel"]["generate_spectrogram"]

        def __init__(self, d_char, layers, n_mels):
            super().__init__()
            self.vocab, self.blanking = vocab, True
            self.embed = talknet_modules.GaussianEmbedding(vocab, d_char)
            self.norm_f0 = talknet_modules.MaskedInstanceNorm1d(1)
            self.res_f0 = talknet_modules.StyleResidual(d_char, 1, kernel_size=3)
            self.encoder = encoder(d_char, layers)
            self.proj = nn.Conv1d(layers[-1]["filters"], n_mels, kernel_size=1)

    arrays: dict[str, np.ndarray] = {}
    # Full-size layouts (the released checkpoints' names and shapes) from upstream's example configs.
    from omegaconf import OmegaConf
    conf = {}
    for part in ("durs", "pitch", "spect"):
        cfg = OmegaConf.load(root / f"examples/tts/conf/talknet-{part}.yaml")
        conf[part] = OmegaConf.to_container(cfg.model.encoder.jasper, resolve=True)
        arrays[f"layers_{part}"] = np.array(json.dumps(conf[part]))
    full = {"durs": Durs(128, conf["durs"]), "pitch": Pitch(128, conf["pitch"]),
            "spect": Spect(128, conf["spect"], 80)}
    for part, m in full.items():
        arrays[f"layout_{part}"] = np.array(json.dumps({k: list(v.shape) for k, v in m.state_dict().items()}))

    torch.manual_seed(0)
    durs_m = seeded_fill(Durs(D_CHAR_SMALL, SMALL["durs"]), SEED)
    pitch_m = seeded_fill(Pitch(D_CHAR_SMALL, SMALL["pitch"]), SEED + 1)
    spect_m = seeded_fill(Spect(D_CHAR_SMALL, SMALL["spect"], N_MELS_SMALL), SEED + 2)
    with torch.no_grad():
        # Durations of about 2-8 frames per token and a voiced/silent mix: shift the seeded output heads.
        durs_m.proj.weight.mul_(4.0)
        durs_m.proj.bias.fill_(1.2)
        pitch_m.sil_proj.weight.mul_(20.0)
        pitch_m.sil_proj.bias.fill_(-1.2)
    spect_m._durs_model, spect_m._pitch_model = durs_m, pitch_m
    for part, m in (("durs", durs_m), ("pitch", pitch_m), ("spect", spect_m)):
        for k, v in m.state_dict().items():
            if not k.startswith(("_durs_model.", "_pitch_model.")):
                arrays[f"w_{part}.{k}"] = v.numpy()

    gen = torch.Generator().manual_seed(SEED)
    rows = [torch.randint(0, 56, (n,), generator=gen) for n in (9, 14)]
    with torch.no_grad():
        for i, row in enumerate(rows):
            arrays[f"tokens_{i}"] = row.numpy()
            blanked = dataset.interleave(x=torch.full((len(row) + 1,), BLANK, dtype=torch.long), y=row)[None]
            arrays[f"blanked_{i}"] = blanked.numpy()
            mel = spect_m.generate_spectrogram(tokens=row[None])
            # generate_spectrogram's intermediates, recomputed with upstream's own forwards and its rules
            text_len = torch.tensor(blanked.shape[-1]).unsqueeze(0)
            log_durs = durs_m(text=blanked, text_len=text_len)
            durs = log_durs.exp() - 1
            durs[durs < 0.0] = 0.0
            durs = durs.round().long()
            f0_sil, f0_body = pitch_m(text=blanked, text_len=text_len, durs=durs)
            f0 = (~(f0_sil.sigmoid() > 0.5) * (f0_body * F0_STD + F0_MEAN)).float()
            arrays.update({f"log_durs_{i}": log_durs.numpy(), f"durs_{i}": durs.numpy(),
                           f"f0_sil_{i}": f0_sil.numpy(), f"f0_body_{i}": f0_body.numpy(), f"f0_{i}": f0.numpy(),
                           f"mel_{i}": mel.numpy()})
            print(f"row {i}: {blanked.shape[-1]} tokens, {int(durs.sum())} frames, "
                  f"{int((f0 > 0).sum())} voiced, mel {tuple(mel.shape)}")
        # A right-padded batch of both rows through each forward (masking).
        blanked = [torch.from_numpy(arrays[f"blanked_{i}"][0]) for i in range(2)]
        text = dataset.merge(blanked, value=PAD, dtype=torch.long)
        text_len = torch.tensor([len(b) for b in blanked])
        durs = dataset.merge([torch.from_numpy(arrays[f"durs_{i}"][0]) for i in range(2)], value=0)
        f0 = dataset.merge([torch.from_numpy(arrays[f"f0_{i}"][0]) for i in range(2)], value=0.0)
        arrays.update({"batch_text": text.numpy(), "batch_text_len": text_len.numpy(), "batch_durs": durs.numpy(),
                       "batch_f0": f0.numpy(),
                       "batch_log_durs": durs_m(text=text, text_len=text_len).numpy(),
                       "batch_f0_sil": pitch_m(text=text, text_len=text_len, durs=durs)[0].numpy(),
                       "batch_f0_body": pitch_m(text=text, text_len=text_len, durs=durs)[1].numpy(),
                       "batch_mel": spect_m(text=text, text_len=text_len, durs=durs, f0=f0).numpy()})
    arrays.update(vocabulary_goldens())
    save_golden(OUT, UPSTREAM, arrays)


#: Fixed G2P outputs (what g2p_en returns: ARPAbet with stress digits, " " between words, punctuation) with the
#: cases `Phonemes.encode` treats specially: stresses, apostrophes, spaces before punctuation, repeated and
#: trailing spaces, symbols outside the table.
G2P_OUTPUTS = [
    ["HH", "AH0", "L", "OW1", " ", ",", " ", "W", "ER1", "L", "D", " ", "!"],
    ["IH1", "T", "'", "S", " ", " ", "T", "UW1", " ", "AH0", "K", "L", "AA1", "K", " ", ".", " ", " "],
    ["DH", "AH0", " ", "(", "B", "IH1", "G", ")", " ", "-", " ", "K", "AE1", "T", " ", "…", " ", "?", " ", ";"],
    ["Z", "IY1", "R", "OW0", " ", ":", " ", "/", " ", "\"", "OW2", "\"", " ", "[", "AY1", "]", " ", "{", "}"],
]
VOCAB_VARIANTS = {
    "released": dict(punct=True, stresses=False, spaces=True, add_blank_at="last"),
    "variant": dict(punct=True, stresses=True, spaces=False, add_blank_at="last_but_one", pad_with_space=True),
}


def vocabulary_goldens() -> dict[str, np.ndarray]:
    """Upstream's `vocabs.Phonemes` label table and `encode` on the fixed G2P outputs. Stubbed: `nltk` (its
    `data.find`, which only checks for corpora to download), `nemo.collections.common.parts.preprocessing.
    parsers` and `nemo.utils.get_rank` (import-only / rank 0), and `g2p_en`, whose `G2p()` here returns the
    fixed outputs above (the input of the compared `encode`, not part of it)."""
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m

    module("nltk", data=types.SimpleNamespace(find=lambda name: name), download=lambda *a, **k: None)
    module("nemo.collections.common.parts.preprocessing", parsers=None)
    module("nemo.utils.get_rank", is_global_rank_zero=lambda: True)
    outputs = {f"text{i}": out for i, out in enumerate(G2P_OUTPUTS)}
    module("g2p_en", G2p=lambda: (lambda text: list(outputs[text])))
    from nemo.collections.common.data.vocabs import Phonemes

    arrays = {}
    for key, kwargs in VOCAB_VARIANTS.items():
        vocab = Phonemes(**kwargs)
        arrays[f"vocab_{key}_labels"] = np.array(json.dumps(vocab.labels))
        arrays[f"vocab_{key}_ids"] = np.array(json.dumps([vocab.encode(text) for text in outputs]))
        arrays[f"vocab_{key}_special"] = np.array([vocab.pad, vocab.blank, vocab.oov])
    arrays["g2p_outputs"] = np.array(json.dumps(G2P_OUTPUTS))
    arrays["vocab_variants"] = np.array(json.dumps(VOCAB_VARIANTS))
    return arrays


if __name__ == "__main__":
    main(Path(sys.argv[1]))
