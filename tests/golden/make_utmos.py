"""Golden outputs of SpeechMOS's UTMOS22 strong learner (the UTMOS model ARBench re-implements) on seeded weights.

Upstream: tarepan/SpeechMOS@ed25eacbfa42b99156c36ebec67a733b5dbb9b79 (`speechmos/utmos22/strong/model.py`,
`speechmos/utmos22/fairseq_alt.py`). Run against a checkout:

    python tests/golden/make_utmos.py /path/to/SpeechMOS

Stubbed: `torchaudio` (its `functional.resample` is only called with 16 kHz in and out here, where it returns the
waveform unchanged; the stub asserts that). Upstream's `UTMOS22Strong()` at its released size gets
`golden_weights.seeded_fill` weights (seed 70) and scores two 16 kHz utterances of different lengths, one per
call as ARBench does (a padded batch would change the frame mean). Recorded: the wav2vec 2.0 frame features and
the scores.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, save_golden, seeded_fill  # noqa: E402

UPSTREAM = "tarepan/SpeechMOS@ed25eacbfa42b99156c36ebec67a733b5dbb9b79"
OUT = Path(__file__).parent / "utmos"


def resample(wave, orig_freq, new_freq):
    assert orig_freq == new_freq == 16000
    return wave


def main(checkout: Path) -> None:
    torchaudio = types.ModuleType("torchaudio")
    torchaudio.functional = types.SimpleNamespace(resample=resample)
    sys.modules["torchaudio"] = torchaudio
    sys.path.insert(0, str(checkout))
    from speechmos.utmos22.strong.model import UTMOS22Strong

    model = seeded_fill(UTMOS22Strong(), 70)
    rng = np.random.default_rng(8)
    t = np.arange(16000 * 2) / 16000
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + rng.normal(0, 0.02, t.size))
    waves = [voiced[:16000 + 3210].astype(np.float32), rng.normal(0, 0.1, 16000 + 800).astype(np.float32)]
    out = {"layout": np.array(layout(model))}
    with torch.no_grad():
        for k, wave in enumerate(waves):
            x = torch.from_numpy(wave)[None]
            out[f"wave{k}"] = wave
            out[f"frames{k}"] = model.wav2vec2(x).numpy()
            out[f"score{k}"] = model(x, 16000).numpy()
    assert abs(float(out["score0"][0]) - float(out["score1"][0])) > 1e-3, "scores ignore the input"
    save_golden(OUT, UPSTREAM, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
