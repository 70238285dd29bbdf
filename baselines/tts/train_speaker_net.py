"""Train the offline speaker network (`espeak-speaker-tdnn`) on espeak-ng voices.

No speaker-verification weights ship in any package reachable here, so the offline smoke test uses a small
network trained by this script. A "speaker" is one espeak-ng accent + voice variant (e.g. `en-gb-scotland+f2`);
utterances are sentences built from fixed word lists, spoken at a few speeds. Speakers are split into
training and held-out sets; the script reports the equal error rate (EER) of cosine scoring on held-out
speakers and sentences, i.e. on voices the network never saw.

    .venv/bin/python -m baselines.tts.train_speaker_net    # about 3.3 minutes of CPU time

Deterministic (fixed seeds, one thread); writes harness/datasets/espeak_speaker_tdnn.safetensors.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from harness.datasets.espeak import EspeakConfig, espeak_version, synthesize
from harness.features.audio import to_16k_mono
from harness.features.speaker import ESPEAK_TDNN_PATH, TDNNSpeakerConfig, TDNNSpeakerNet

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "adam", "Andy", "Annie", "aunty", "david", "linda")
SUBJECTS = ("the old farmer", "a small child", "my neighbour", "the pilot", "our teacher", "the young doctor",
            "a tired sailor", "the baker")
VERBS = ("carried", "painted", "found", "sold", "watched", "cleaned", "borrowed", "dropped")
OBJECTS = ("a heavy wooden box", "the green umbrella", "seven paper lanterns", "an old silver coin",
           "the broken window", "a basket of apples", "the evening paper", "two leather boots")
PLACES = ("near the river", "after lunch", "in the quiet garden", "before the storm", "at the station",
          "on a cold morning")
SPEEDS = (140, 165, 190)
TRAIN_SENTENCES, TEST_SENTENCES = 16, 6
HELD_OUT_SPEAKERS = 30
SEGMENT = 16000 * 2  # 2 s training crops
STEPS, BATCH, LR = 500, 64, 2e-3
SEED = 0


def sentences(n: int, rng: random.Random) -> list[str]:
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS, PLACES))
    return [" ".join(parts).capitalize() + "." for parts in rng.sample(combos, n)]


def synthesise_set(speakers, texts, rng: random.Random) -> tuple[list[np.ndarray], list[int]]:
    waves, labels = [], []
    for label, voice in enumerate(speakers):
        for text in texts:
            audio, rate = synthesize(text, EspeakConfig(voice=voice, speed=rng.choice(SPEEDS)))
            waves.append(to_16k_mono(audio, rate))
            labels.append(label)
    return waves, labels


def crop_batch(waves, labels, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    index = rng.integers(0, len(waves), BATCH)
    out = np.zeros((BATCH, SEGMENT), dtype=np.float32)
    for row, i in enumerate(index):
        wave = waves[i]
        if len(wave) > SEGMENT:
            start = rng.integers(0, len(wave) - SEGMENT)
            out[row] = wave[start:start + SEGMENT]
        else:
            out[row, :len(wave)] = wave
        out[row] *= rng.uniform(0.3, 1.0)  # loudness must not identify a voice
    return torch.from_numpy(out), torch.tensor([labels[i] for i in index])


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> float:
    """EER of a score threshold separating same-speaker from different-speaker pairs."""
    order = np.argsort(-scores)
    same = same[order]
    true_accept = np.cumsum(same) / same.sum()
    false_accept = np.cumsum(~same) / (~same).sum()
    k = np.argmin(np.abs((1 - true_accept) - false_accept))
    return float(((1 - true_accept[k]) + false_accept[k]) / 2)


@torch.no_grad()
def evaluate(model: TDNNSpeakerNet, waves, labels) -> float:
    model.eval()
    embeddings = torch.cat([nn.functional.normalize(model(torch.from_numpy(w)[None]), dim=1) for w in waves])
    scores = (embeddings @ embeddings.T).numpy()
    labels = np.asarray(labels)
    upper = np.triu_indices(len(labels), k=1)
    return equal_error_rate(scores[upper], (labels[:, None] == labels[None, :])[upper])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ESPEAK_TDNN_PATH, help="where to write the safetensors file")
    out = parser.parse_args().out
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    rng = random.Random(SEED)
    start = time.perf_counter()
    speakers = [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]
    rng.shuffle(speakers)
    held_out, train_speakers = speakers[:HELD_OUT_SPEAKERS], speakers[HELD_OUT_SPEAKERS:]
    texts = sentences(TRAIN_SENTENCES + TEST_SENTENCES, rng)
    train_waves, train_labels = synthesise_set(train_speakers, texts[:TRAIN_SENTENCES], rng)
    test_waves, test_labels = synthesise_set(held_out, texts[TRAIN_SENTENCES:], rng)
    print(f"espeak-ng {espeak_version()}: {len(train_waves)} training clips ({len(train_speakers)} voices), "
          f"{len(test_waves)} held-out clips ({len(held_out)} voices) in {time.perf_counter() - start:.0f} s")

    cfg = TDNNSpeakerConfig()
    model = TDNNSpeakerNet(cfg)
    head = nn.Linear(cfg.embedding_dim, len(train_speakers))
    params = [*model.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(params, lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LR, total_steps=STEPS)
    batches = np.random.default_rng(SEED)
    print(f"held-out EER before training: {100 * evaluate(model, test_waves, test_labels):.1f}%")
    for step in range(1, STEPS + 1):
        model.train()
        wave, label = crop_batch(train_waves, train_labels, batches)
        loss = nn.functional.cross_entropy(head(model(wave)), label)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}, held-out EER "
                  f"{100 * evaluate(model, test_waves, test_labels):.1f}% ({time.perf_counter() - start:.0f} s)")
    eer = evaluate(model, test_waves, test_labels)
    metadata = {"config": json.dumps(asdict(cfg)), "espeak_version": espeak_version(),
                "held_out_eer": f"{eer:.4f}", "train_voices": str(len(train_speakers)),
                "held_out_voices": str(len(held_out)), "steps": str(STEPS), "seed": str(SEED)}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out), metadata=metadata)
    print(f"held-out EER {100 * eer:.2f}%; wrote {out} ({out.stat().st_size / 1e6:.2f} MB) "
          f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
