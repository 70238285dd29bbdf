"""Golden outputs of Seed-TTS-eval's speaker-similarity model (WavLM-Large + UniSpeech's ECAPA-TDNN) on seeded weights.

Upstream, three checkouts:

- BytedanceSpeech/seed-tts-eval@752f4297f090c46bb1a55a1f7439e5944ddefe8d: `cal_sim.sh` runs
  `thirdparty/UniSpeech/downstreams/speaker_verification/verification_pair_list_v2.py --model_name wavlm_large
  --checkpoint wavlm_large_finetune.pth --wav1_start_sr 0 --wav2_start_sr 0 --wav1_end_sr -1 --wav2_end_sr -1`,
  which calls `verification.verification(...)` once per pair (generated wav, prompt wav). That function builds the
  model with `init_model("wavlm_large", checkpoint)` = `ECAPA_TDNN_SMALL(feat_dim=1024, feat_type="wavlm_large",
  config_path=None)` and `load_state_dict(torch.load(checkpoint)["model"], strict=False)`, reads both files with
  `librosa.load(sr=None, mono=False)`, resamples with `torchaudio.transforms.Resample(sr, 16000)`, embeds each
  (fp32, `torch.no_grad`) and returns `F.cosine_similarity`. This script calls that `verification` function itself.
- microsoft/UniSpeech@40d322798fba7fbaef8c882e04ac06ae5e784435 `downstreams/speaker_verification/models/
  ecapa_tdnn.py`: Seed-TTS-eval's vendored copy is this file with exactly two lines changed (the script checks it
  line by line): `from .utils import UpstreamExpert` is commented out (it imports fairseq, and is used only with a
  `config_path`), and `torch.hub._validate_not_a_forked_repo = lambda a, b, c: True` is added before the hub call.
- s3prl/s3prl@ec8064b5889f81ca460fbe2c094ce576a6f120b7 (`s3prl/version.txt` 0.4.18, the version on PyPI): the code
  behind `torch.hub.load("s3prl/s3prl", "wavlm_large")`, which ECAPA_TDNN calls (torch.hub fetches the default branch
  of the GitHub repository; its WavLM files last changed on 2023-09-26, "format", before Seed-TTS-eval's commit).

Run with a Python that has torchaudio (its `Resample`), librosa and fire, i.e. upstream's own requirements (a scratch
venv on top of ARBench's: torchaudio 2.11.1 imports and resamples beside torch 2.14 here), against the checkouts:

    python tests/golden/make_wavlm_ecapa.py /path/to/seed-tts-eval /path/to/s3prl /path/to/UniSpeech

The one substitution: `torch.hub.load` needs the internet, so it is replaced by a function that asserts it was
called as `("s3prl/s3prl", "wavlm_large")` and returns `s3prl.upstream.wavlm.hubconf.wavlm_large()` from the s3prl
checkout. That is the function the hub entry names: the repository's `hubconf.py` does `for _option in
hub.options(): globals()[_option] = getattr(hub, _option)`, and `s3prl/hub.py` takes its `wavlm_large` from `from
s3prl.upstream.wavlm.hubconf import *` (the only `def wavlm_large` in the repository; the script checks both
lines). `hubconf.py` itself cannot be imported here (s3prl/hub.py star-imports every upstream, and some call
`torchaudio.set_audio_backend`, gone from torchaudio 2.x). Inside `wavlm_large` only the download is replaced:
`_urls_to_filepaths` is patched to assert the URL (`https://huggingface.co/s3prl/converted_ckpts/resolve/main/
wavlm_large.pt`) and return a local file holding `{"cfg": WAVLM_LARGE_CFG, "model": ...}`, which s3prl's own
`UpstreamExpert` loads (`WavLMConfig(checkpoint["cfg"])`, `WavLM(cfg)`, strict `load_state_dict`). Its weights are
drawn with another seed, since the fine-tuned checkpoint overwrites every one of them (the script checks that
it did).

`WAVLM_LARGE_CFG`: the converted `wavlm_large.pt` cannot be downloaded, so its `cfg` is written out here. The
checkpoint's key names and shapes fix the sizes, `extractor_mode="layer_norm"` (a LayerNorm in every conv block),
`conv_bias=False`, `relative_position_embedding` and `gru_rel_pos` (`relative_attention_bias`, `grep_linear`,
`grep_a` exist) and `num_buckets=320`; the rest is what torchaudio's conversion of the same WavLM-Large.pt says
(torchaudio 2.11.1 `models.wavlm_large`: `encoder_layer_norm_first=True`, `encoder_max_distance=800`; its
`pipelines.WAVLM_LARGE` bundle: `_normalize_waveform=True`), and what ARBench's `WavLMConfig` and transformers'
`microsoft/wavlm-large` assume. Dropouts do not act in eval mode.

Weights: `golden_weights.seeded_module_state` of upstream's built model (seed 16), then the ECAPA head's 29
BatchNorm statistics measured on the three utterances below with upstream's forward (`calibrate_batchnorm`; with
the rule's statistics every embedding had cosine 0.99 with every other) and stored with the outputs. Saved in
the released file's layout, `{"model": state + "loss_calculator.projection.weight", "best_valid_eer": ...}` (the
AAM-softmax projection is training-only; its real shape is not known here, any shape serves because both loaders
drop it by name: upstream's `strict=False` leaves it unexpected).

Inputs: three speech-like mono 16 kHz 16-bit WAV files of 0.80 s, 2.11 s and 1.31 s (39, 105 and 65 frames:
relative distances past 80 frames reach WavLM's logarithmic position buckets), embedded through upstream's
own `verification` (librosa read, `Resample(16000, 16000)` is the identity there). Recorded, through forward hooks
on upstream's modules during those calls: the 25 hidden states s3prl exposes (4 channels, `::256`, and 4 seeded
random projections of each frame, to stay small), the softmax layer weights, the weighted and instance-normalised
features (same reduction), the 256-d embeddings and the cosine similarity of each pair. Also the relative-position
bucket of every distance from -1200 to 1200 (upstream's `_relative_positions_bucket`; 1200 frames = 24 s, past
`max_distance` 800), which the utterances above are too short to reach.

Regenerating gives a byte-identical file (checked on 2026-12-05; about 5 GB of memory and 2 minutes of CPU).
"""

from __future__ import annotations

import difflib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, save_golden, seeded_module_state, seeded_tensor  # noqa: E402

UPSTREAM = ("BytedanceSpeech/seed-tts-eval@752f4297f090c46bb1a55a1f7439e5944ddefe8d + "
            "microsoft/UniSpeech@40d322798fba7fbaef8c882e04ac06ae5e784435 + "
            "s3prl/s3prl@ec8064b5889f81ca460fbe2c094ce576a6f120b7")
OUT = Path(__file__).parent / "wavlm_ecapa"
SEED = 16
S3PRL_URL = "https://huggingface.co/s3prl/converted_ckpts/resolve/main/wavlm_large.pt"
SV_DIR = "thirdparty/UniSpeech/downstreams/speaker_verification"
WAVLM_LARGE_CFG = {
    "extractor_mode": "layer_norm", "encoder_layers": 24, "encoder_embed_dim": 1024, "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16, "activation_fn": "gelu", "layer_norm_first": True,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", "conv_bias": False,
    "normalize": True, "conv_pos": 128, "conv_pos_groups": 16, "relative_position_embedding": True,
    "num_buckets": 320, "max_distance": 800, "gru_rel_pos": True, "dropout": 0.1, "attention_dropout": 0.1,
    "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "dropout_input": 0.0, "dropout_features": 0.0,
    "feature_grad_mult": 1.0}
#: (samples, fundamental Hz, formant-ish Hz, seed) of the three test utterances, 16 kHz
UTTERANCES = ((12_811, 118.0, 700.0, 1), (33_797, 205.0, 1100.0, 2), (20_903, 131.0, 760.0, 3))
PAIRS = ((0, 1), (1, 2), (0, 2))
PROBES = 4
CHANNELS = slice(None, None, 256)
BUCKET_RANGE = 1200


def utterance(n: int, f0: float, formant: float, seed: int) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with noise, as int16 (what a TTS system writes)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    voiced = sum(np.sin(k * phase) / k * np.exp(-((k * f0 - formant) / 600) ** 2) for k in range(1, 30))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + seed)
    wave = 0.25 * voiced * envelope / np.abs(voiced).max() + rng.normal(0, 0.01, n)
    return np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)


def reduce(features: torch.Tensor, probe: torch.Tensor) -> np.ndarray:
    """(..., 1024) -> (..., 8): channels ::256 and the seeded random projections."""
    return torch.cat([features[..., CHANNELS], features @ probe], dim=-1).numpy()


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Set every BatchNorm's running statistics to those of its input over the utterances' frames, one layer
    at a time in forward order (each layer's input depends on the statistics before it), as measured with
    upstream's own forward on WavLM's features (computed once). Returns the statistics by state-dict name."""
    features = [model.get_feat(w) for w in waves]
    model.get_feat = lambda x: x  # upstream's forward from here on gets the features directly
    stats = {}
    for name, bn in [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]:
        seen: list[torch.Tensor] = []
        handle = bn.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0].detach()))
        for f in features:
            model(f)
        handle.remove()
        x = torch.cat([s.transpose(0, 1).reshape(s.shape[1], -1) for s in seen], dim=1)  # (C, frames)
        bn.running_mean.copy_(x.mean(1))
        bn.running_var.copy_(x.var(1))
        stats[f"{name}.running_mean"], stats[f"{name}.running_var"] = bn.running_mean.clone(), bn.running_var.clone()
    del model.get_feat
    return stats


def check_vendored_copy(seed_sv: Path, unispeech: Path) -> None:
    ours = (unispeech / "downstreams/speaker_verification/models/ecapa_tdnn.py").read_text().splitlines()
    theirs = (seed_sv / "models/ecapa_tdnn.py").read_text().splitlines()
    changed = [line for line in difflib.unified_diff(ours, theirs, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == ["-from .utils import UpstreamExpert", "+# from .utils import UpstreamExpert",
                       "+                torch.hub._validate_not_a_forked_repo=lambda a,b,c: True"], changed


def check_hub_entry(s3prl: Path) -> None:
    assert "globals()[_option] = getattr(hub, _option)" in (s3prl / "hubconf.py").read_text()
    assert "from s3prl.upstream.wavlm.hubconf import *" in (s3prl / "s3prl/hub.py").read_text()
    defs = [p for p in (s3prl / "s3prl").rglob("*.py") if "def wavlm_large(" in p.read_text()]
    assert defs == [s3prl / "s3prl/upstream/wavlm/hubconf.py"], defs


def main(seed_tts_eval: Path, s3prl: Path, unispeech: Path) -> None:
    seed_sv = seed_tts_eval / SV_DIR
    check_vendored_copy(seed_sv, unispeech)
    check_hub_entry(s3prl)
    torch.set_num_threads(2)
    sys.path[:0] = [str(seed_sv), str(s3prl)]
    import s3prl.upstream.wavlm.hubconf as wavlm_hub
    import verification  # Seed-TTS-eval's speaker_verification/verification.py
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    work = Path(tempfile.mkdtemp(prefix="wavlm-ecapa-golden-"))
    pretrained = work / "wavlm_large.pt"
    backbone = WavLM(WavLMConfig(WAVLM_LARGE_CFG))
    torch.save({"cfg": WAVLM_LARGE_CFG, "model": seeded_module_state(backbone, SEED + 1)}, pretrained)
    del backbone

    def urls_to_filepaths(url, refresh=False):
        assert url == S3PRL_URL and not refresh, url
        return str(pretrained)

    def hub_load(repo, entry, *args, **kwargs):
        assert (repo, entry, args, kwargs) == ("s3prl/s3prl", "wavlm_large", (), {}), (repo, entry)
        return wavlm_hub.wavlm_large()

    wavlm_hub._urls_to_filepaths = urls_to_filepaths
    torch.hub.load = hub_load

    fresh = verification.init_model("wavlm_large")
    fresh.load_state_dict(seeded_module_state(fresh, SEED), strict=True)
    waves = [utterance(*u) for u in UTTERANCES]
    stats = calibrate_batchnorm(fresh.eval(), [torch.from_numpy(w.astype(np.float32) / 32768)[None] for w in waves])
    state = fresh.state_dict()
    del fresh
    checkpoint = work / "wavlm_large_finetune.pth"
    projection = seeded_tensor("loss_calculator.projection.weight", (256, 64), SEED)
    torch.save({"model": {**state, "loss_calculator.projection.weight": projection}, "best_valid_eer": 0.5},
               checkpoint)

    model = verification.init_model("wavlm_large", str(checkpoint))  # upstream's loading, strict=False
    loaded = model.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items()), \
        "the fine-tuned checkpoint did not overwrite every parameter"
    del state
    model.eval()

    probe = seeded_tensor("probe", (1024, PROBES), SEED)
    seen: dict[str, list] = {"wave": [], "hidden": [], "mixed": [], "embedding": []}
    def record_model(module, args, output) -> None:
        seen["wave"].append(args[0].clone())
        seen["embedding"].append(output.clone())

    def record_mixed(module, args, output) -> None:
        seen["mixed"].append(output[0].T.clone())

    model.register_forward_hook(record_model)
    model.instance_norm.register_forward_hook(record_mixed)
    expert = model.feature_extract  # s3prl's UpstreamBase adds "hidden_states" in __call__, after forward hooks

    def recorded_call(self, wavs, *args, **kwargs):
        result = super(type(self), self).__call__(wavs, *args, **kwargs)
        seen["hidden"].append(torch.stack(result["hidden_states"])[:, 0].clone())
        return result

    expert.__class__ = type(type(expert))("Recorded", (type(expert),), {"__call__": recorded_call})

    paths = []
    for k, wave in enumerate(waves):
        paths.append(work / f"utt{k}.wav")
        sf.write(paths[-1], wave, 16000, subtype="PCM_16")
    out = {"layout": np.array(layout(model)), "wavlm_cfg": np.array(json.dumps(WAVLM_LARGE_CFG)),
           **{f"bn:{k}": v.numpy() for k, v in stats.items()}}
    sims = []
    for a, b in PAIRS:
        sim, _ = verification.verification("wavlm_large", str(paths[a]), str(paths[b]), use_gpu=False, model=model)
        sims.append(float(sim[0]))
    # each verification call embeds (a, b); keep the first sighting of each utterance
    order = [i for pair in PAIRS for i in pair]
    for k, wave in enumerate(waves):
        j = order.index(k)
        assert torch.equal(seen["wave"][j][0], torch.from_numpy(wave.astype(np.float32) / 32768))
        for i in (i for i, u in enumerate(order) if u == k):
            assert torch.equal(seen["embedding"][i], seen["embedding"][j])
        out[f"wave{k}"] = wave
        out[f"hidden{k}"] = reduce(seen["hidden"][j], probe)
        out[f"mixed{k}"] = reduce(seen["mixed"][j], probe)
        out[f"embedding{k}"] = seen["embedding"][j][0].numpy()
    out["layer_weights"] = torch.softmax(model.feature_weight.detach(), -1).numpy()
    out["pairs"], out["sims"] = np.array(PAIRS), np.array(sims)
    attention = model.feature_extract.model.encoder.layers[0].self_attn
    distances = torch.arange(-BUCKET_RANGE, BUCKET_RANGE + 1)
    out["buckets"] = attention._relative_positions_bucket(distances, bidirectional=True).numpy().astype(np.int16)

    emb = np.stack([out[f"embedding{k}"] for k in range(3)])
    assert np.abs(emb[0] - emb[1]).max() > 0.05 * np.abs(emb).max(), "embeddings ignore the input"
    assert max(sims) - min(sims) > 0.01, sims
    assert len(set(out["buckets"].tolist())) > 300  # both directions, small and logarithmic buckets
    save_golden(OUT, UPSTREAM, out)
    print("sims", [round(s, 6) for s in sims], "hidden scale per layer",
          [round(float(np.abs(out["hidden1"][i]).max()), 2) for i in range(25)])
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
