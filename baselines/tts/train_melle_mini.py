"""Train `melle-mini` (baselines/tts/melle_mini.py) on espeak-ng speech: the baseline synthesiser makes the data,
so training is free and offline.

Text: short phrases of the King James Bible (public domain; Debian `bible-kjv`, read through its `bible`
program), split at punctuation, 3-10 words each. Each phrase is phonemised by espeak-ng (`-x`) and spoken by the
en-us voice at 160 words per minute (the `espeak-ng` method's defaults), resampled to 16 kHz, and turned into
80-bin log10 mel frames (MELLE's features). The five `espeak-tts-mini` sentences and their prompts are excluded.

Objective (MELLE eq. 5-8 and appendix A.3): L = L_reg + lambda L_KL + beta L_flux + gamma L_stop with L1 + L2
on y' and y'', KL(N(mu, sigma^2) || N(y, I)), flux = -|mu_t - y_{t-1}|_1, BCE stop (positive weight 100);
lambda = 0 for the first `--kl-warmup` steps then 0.1 (the paper: 0 for 10 K of 400 K steps), beta = 0.5,
gamma = 1. Each term is a mean over the same elements (the paper's sums over frames and bins, scaled by one
constant), so their ratios are the paper's. AdamW, linear warm-up to the peak learning rate then linear decay
(the paper's schedule, shortened). Pre-net dropout 0.5.

Deterministic: fixed seeds, one thread. Stops after `--steps` or `--max-minutes` of training, whichever comes
first, and writes baselines/tts/melle_mini.safetensors (float16) and melle_mini_training.json (settings, data
size, losses, seconds, machine load).

    .venv/bin/python -m baselines.tts.train_melle_mini      # about 25 minutes on one shared CPU thread
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from baselines.tts.melle_mini import (PAD, TRAINING_RECORD, WEIGHTS_PATH, MelFeatures, MelleMini,
                                      MelleMiniNetConfig, tokenize)
from harness.datasets.espeak import EspeakConfig, espeak_version, phonemes, synthesize
from harness.features.audio import to_16k_mono

KJV_RANGES = ("Gen1:1-Gen50:26", "Mat1:1-Mat28:20", "Luke1:1-Luke24:53")
EXCLUDED = ("birch canoe", "depth of a well", "round bowls", "parked truck", "stockings", "dark blue background",
            "chicken leg", "lemons", "steady work", "sun rose")
VERSE = re.compile(r"^\S*?\d+:\d+ (.*)$")
SEED = 0
LAMBDA_KL, BETA_FLUX, GAMMA_STOP, STOP_POS_WEIGHT = 0.1, 0.5, 1.0, 100.0
PRENET_DROPOUT = 0.5


def phrases(count: int, rng: random.Random) -> list[str]:
    """`count` distinct KJV phrases of 3-10 words (split at , ; : . ? !), shuffled with `rng`."""
    try:
        out = "\n".join(subprocess.run(["bible", "-f", r], capture_output=True, text=True, check=True).stdout
                        for r in KJV_RANGES)
    except FileNotFoundError as exc:
        raise SystemExit("the `bible` program is missing: apt-get install bible-kjv") from exc
    found: dict[str, None] = {}
    for line in out.splitlines():
        match = VERSE.match(line.strip())
        for part in re.split(r"[,;:.?!()]", match[1] if match else ""):
            words = part.split()
            text = " ".join(words)
            if 3 <= len(words) <= 10 and not any(e in text.lower() for e in EXCLUDED):
                found[text[0].upper() + text[1:] + "."] = None
    texts = sorted(found)
    rng.shuffle(texts)
    return texts[:count]


def build_data(texts: list[str], features: MelFeatures, reduction: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tokens, frame groups (N, r*n_mels)) per phrase; frames padded to a multiple of r with the silence floor."""
    data = []
    floor = float(np.log10(features.cfg.log_floor))
    for text in texts:
        audio, rate = synthesize(text, EspeakConfig())
        mel = features(to_16k_mono(audio, rate))
        pad = (-mel.shape[0]) % reduction
        mel = torch.cat([mel, torch.full((pad, mel.shape[1]), floor)]) if pad else mel
        data.append((torch.tensor(tokenize(phonemes(text, EspeakConfig()))), mel.reshape(-1, reduction * mel.shape[1])))
    return data


def losses(model: MelleMini, tokens, groups, kl_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """MELLE's objective on a batch (teacher forcing), each term a mean over valid frame elements."""
    e, mask = model(tokens, groups, PRENET_DROPOUT)
    target = nn_pad(groups)
    eps = torch.randn(target.shape)
    out = model.heads(e, eps)
    refined = model.postnet(out["coarse"])
    m = mask[..., None].float()
    count = m.sum() * target.shape[-1]

    def mean(x):
        return (x * m).sum() / count

    reg = sum(mean((target - y).abs()) + mean((target - y) ** 2) for y in (out["coarse"], refined))
    kl = mean(0.5 * (out["logvar"].exp() + (out["mu"] - target) ** 2 - 1 - out["logvar"]))
    # flux: -|mu_t - y_{t-1}|_1 for t >= 1 within each utterance (the previous ground-truth frame group)
    flux_mask = m[:, 1:]
    flux = -((out["mu"][:, 1:] - target[:, :-1]).abs() * flux_mask).sum() / (flux_mask.sum() * target.shape[-1])
    stop_target = torch.zeros(mask.shape)
    for i, g in enumerate(groups):
        stop_target[i, len(g) - 1] = 1.0
    stop = F.binary_cross_entropy_with_logits(out["stop"][mask], stop_target[mask],
                                              pos_weight=torch.tensor(STOP_POS_WEIGHT))
    total = reg + kl_weight * kl + BETA_FLUX * flux + GAMMA_STOP * stop
    return total, {"total": float(total.detach()), "reg": float(reg.detach()), "kl": float(kl.detach()),
                   "flux": float(flux.detach()), "stop": float(stop.detach())}


def nn_pad(groups) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(groups), batch_first=True)


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then linear decay to 0 (MELLE appendix A.3)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (steps - step) / max(1, steps - warmup))


def batches(data, batch_frames: int, rng: random.Random):
    """Endless batches of about `batch_frames` audio frame groups, drawn from length-sorted buckets."""
    order = sorted(range(len(data)), key=lambda i: len(data[i][1]))
    chunks, current, frames = [], [], 0
    for i in order:
        current.append(i)
        frames += len(data[i][1])
        if frames >= batch_frames:
            chunks.append(current)
            current, frames = [], 0
    while True:
        rng.shuffle(chunks)
        for chunk in chunks:
            yield [data[i][0] for i in chunk], [data[i][1] for i in chunk]


@torch.no_grad()
def held_out_loss(model: MelleMini, data) -> dict[str, float]:
    model.eval()
    torch.manual_seed(SEED + 7)
    _, parts = losses(model, [t for t, _ in data], [g for _, g in data], LAMBDA_KL)
    model.train()
    return parts


@torch.no_grad()
def teacher_forced_check(folder: Path, sentences: list[tuple[str, str]]) -> None:
    """Diagnostic: write `<id>.wav` for (id, text) pairs decoded from the bundled network's TEACHER-FORCED outputs
    (each step sees the espeak-ng frames before it, as in training; mean latents, no pre-net dropout) through the
    post-net and Griffin-Lim. Scoring the folder (`arbench score espeak-tts-mini FOLDER`) separates what the
    network learned per frame from what goes wrong when it feeds back its own frames."""
    import soundfile as sf

    from baselines.tts.melle_mini import load_melle_mini

    model, _ = load_melle_mini()
    features = MelFeatures(model.cfg)
    folder.mkdir(parents=True, exist_ok=True)
    for utt, text in sentences:
        tokens, groups = build_data([text], features, model.cfg.reduction)[0]
        e, _ = model([tokens], [groups])
        mel = model.postnet(model.heads(e, None)["coarse"])[0].reshape(-1, model.cfg.n_mels)
        wave = features.griffin_lim(mel, 48, torch.Generator().manual_seed(0))
        sf.write(str(folder / f"{utt}.wav"), wave, model.cfg.sample_rate, subtype="FLOAT")


def _relative(path: Path) -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phrases", type=int, default=3000)
    parser.add_argument("--held-out", type=int, default=48)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--max-minutes", type=float, default=25.0, help="training wall-clock cap (data excluded)")
    parser.add_argument("--batch-frames", type=int, default=1200, help="frame groups per batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--kl-warmup", type=int, default=100, help="steps with lambda = 0 before lambda = 0.1")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--record", type=Path, default=TRAINING_RECORD)
    parser.add_argument("--teacher-forced-check", type=Path, nargs=2, metavar=("LIST", "FOLDER"),
                        help="do not train: write the bundled network's teacher-forced outputs for the target "
                             "texts of a Seed-format LIST (e.g. espeak-tts-mini's meta.lst) to FOLDER")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.teacher_forced_check:
        listing, folder = args.teacher_forced_check
        lines = [line.split("|") for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        return teacher_forced_check(folder, [(parts[0], parts[3]) for parts in lines])
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    start = time.time()
    cfg = MelleMiniNetConfig()
    features = MelFeatures(cfg)
    texts = phrases(args.phrases + args.held_out, rng)
    data = build_data(texts, features, cfg.reduction)
    train_data, held_out = data[args.held_out:], data[:args.held_out]
    data_seconds = time.time() - start
    audio_seconds = sum(len(g) for _, g in data) * cfg.reduction * cfg.hop_length / cfg.sample_rate
    print(f"espeak-ng {espeak_version()}: {len(train_data)} training phrases, {len(held_out)} held out, "
          f"{audio_seconds / 60:.1f} min of audio, built in {data_seconds:.0f} s", flush=True)

    model = MelleMini(cfg)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    stream = batches(train_data, args.batch_frames, rng)
    history, evals = [], []
    train_start = time.time()
    step = 0
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        tokens, groups = next(stream)
        loss, parts = losses(model, tokens, groups, LAMBDA_KL if step >= args.kl_warmup else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(parts)
        minutes = (time.time() - train_start) / 60
        if step % 50 == 0:
            recent = {k: round(float(np.mean([h[k] for h in history[-50:]])), 4) for k in parts}
            print(f"step {step} {recent} ({minutes:.1f} min)", flush=True)
        if step % 250 == 0 or minutes >= args.max_minutes:
            evals.append({"step": step, **{k: round(v, 4) for k, v in held_out_loss(model, held_out).items()}})
            print(f"held-out {evals[-1]}", flush=True)
        if minutes >= args.max_minutes:
            break
    steps_done = step + 1
    train_seconds = time.time() - train_start
    model.eval()
    final = held_out_loss(model, held_out)
    metadata = {"config": json.dumps(asdict(cfg)), "espeak_version": espeak_version(), "steps": str(steps_done),
                "seed": str(SEED), "method": "toy-scale re-implementation of MELLE (arXiv 2407.08551); not MELLE"}
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata=metadata)
    record = {
        "script": "baselines/tts/train_melle_mini.py",
        "data": {"text": f"King James Bible phrases (public domain, Debian bible-kjv) from {', '.join(KJV_RANGES)}",
                 "speech": f"espeak-ng {espeak_version()}, voice en-us, 160 wpm", "train_phrases": len(train_data),
                 "held_out_phrases": len(held_out), "audio_minutes": round(audio_seconds / 60, 2),
                 "build_seconds": round(data_seconds, 1)},
        "network": asdict(cfg) | {"parameters": params},
        # paths relative to the project (an absolute path would record the trainer's machine)
        "settings": {k: _relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"lambda_kl": LAMBDA_KL, "beta_flux": BETA_FLUX, "gamma_stop": GAMMA_STOP,
           "stop_pos_weight": STOP_POS_WEIGHT, "prenet_dropout": PRENET_DROPOUT, "seed": SEED, "threads": 1},
        "steps_done": steps_done,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - start, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "final_train_losses": {k: round(float(np.mean([h[k] for h in history[-50:]])), 4) for k in history[-1]},
        "held_out_losses": evals + [{"step": steps_done, **{k: round(v, 4) for k, v in final.items()}}],
        "weights_bytes": args.out.stat().st_size,
    }
    args.record.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
