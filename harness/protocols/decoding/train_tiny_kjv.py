"""Train the bundled byte-level models on the King James Bible (public domain, 1611), read from Debian's
`bible-kjv-text` package through its `bible` program (`apt-get install bible-kjv`).

* target `tiny-kjv-target`: GPT d=128, 8 layers, exits after layers 2/4/6 (auxiliary losses, weight
  0.25 each) and 3 blockwise proposal heads (trained on the detached final state, so they never
  change the base model);
* draft `tiny-kjv-draft`: GPT d=128, 1 layer, trained on the text and distilled from the target
  (half cross-entropy, half KL to the target's next-byte distribution), which raises acceptance.

Held out (never trained on): Psalms, Proverbs, Isaiah, John; the benchmark prompts come from them.
Chapters are separated by EOS. Deterministic seeds; one CPU thread for reproducibility. Writes
`models/*.safetensors` (float16), `models/prompts-kjv.jsonl` and `models/training.json` (settings,
losses, held-out bits per byte, seconds).

    python -m harness.protocols.decoding.train_tiny_kjv [--target-steps N] [--draft-steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.protocols.decoding.gpt import EOS_ID, GPT, GPTConfig, encode, init_gpt

MODELS_DIR = Path(__file__).resolve().parent / "models"
TRAIN_RANGES = ("Gen1:1-Job42:17", "Eccl1:1-SSol8:14", "Jer1:1-Mal4:6", "Mat1:1-Luke24:53", "Acts1:1-Rev22:21")
HELD_OUT = {"poetry": "Psa1:1-Psa150:6", "wisdom": "Prv1:1-Prv31:31", "prophecy": "Isa1:1-Isa66:24",
            "narrative": "John1:1-John21:25"}
TARGET = GPTConfig(d_model=128, n_layers=8, n_heads=4, exit_layers=(2, 4, 6), num_draft_heads=3)
DRAFT = GPTConfig(d_model=128, n_layers=1, n_heads=4, exit_layers=(), num_draft_heads=0)
VERSE = re.compile(r"^(\S*?)(\d+):(\d+) (.*)$")


def read_kjv(ref_range: str) -> list[tuple[str, list[str]]]:
    """[(chapter id, verses)] for a verse range, via the `bible` program (-f: one verse per line)."""
    try:
        out = subprocess.run(["bible", "-f", ref_range], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError as exc:
        raise SystemExit("the `bible` program is missing: apt-get install bible-kjv") from exc
    chapters: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = VERSE.match(line.strip())
        if match:
            chapters.setdefault(match[1] + match[2], []).append(match[4])
    return list(chapters.items())


def corpus(ranges) -> torch.Tensor:
    """Chapters as bytes (verses joined by newlines), each followed by EOS."""
    ids: list[int] = []
    for ref in ranges:
        for _, verses in read_kjv(ref):
            ids += encode("\n".join(verses)) + [EOS_ID]
    return torch.tensor(ids, dtype=torch.long)


def batches(data: torch.Tensor, steps: int, batch: int, length: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - length - 1, (batch,), generator=gen)
        window = torch.stack([data[s:s + length + 1] for s in starts.tolist()])
        yield window[:, :-1], window[:, 1:]


def lr_at(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def target_loss(net: GPT, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    states = net.forward_train(x)
    main = ce(net.logits(states[-1]), y)
    loss = main + sum(0.25 * ce(net.logits(states[e - 1]), y) for e in net.config.exit_layers)
    # Proposal head j (1-based) at position i predicts the token j positions after the next one.
    z = F.layer_norm(states[-1].detach(), (net.config.d_model,), net.norm.weight.detach(), net.norm.bias.detach())
    emb = net.tok_emb.weight.detach()
    for j, head in enumerate(net.heads, start=1):
        loss = loss + 0.5 * ce(head(z[:, :-j]) @ emb.T, y[:, j:])
    return loss, float(main.detach())


def draft_loss(net: GPT, teacher: GPT, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    logits = net.logits(net.forward_train(x)[-1])
    with torch.no_grad():
        teacher_logp = torch.log_softmax(teacher.logits(teacher.forward_train(x)[-1]), -1)
    kl = F.kl_div(torch.log_softmax(logits, -1), teacher_logp, log_target=True, reduction="batchmean") / x.shape[1]
    main = ce(logits, y)
    return 0.5 * main + 0.5 * kl, float(main.detach())


def train(net: GPT, loss_fn, data: torch.Tensor, steps: int, batch: int, length: int, peak_lr: float,
          seed: int, label: str) -> list[float]:
    opt = torch.optim.AdamW(net.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.95))
    net.train()
    history, start = [], time.time()
    for step, (x, y) in enumerate(batches(data, steps, batch, length, seed)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr)
        loss, main = loss_fn(net, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        history.append(main)
        if step % 50 == 0 or step == steps - 1:
            print(f"[{label}] step {step}/{steps} ce {main:.3f} ({time.time() - start:.0f}s)", flush=True)
    return history


@torch.no_grad()
def bits_per_byte(net: GPT, data: torch.Tensor, length: int = 256) -> float:
    net.eval()
    n = (len(data) - 1) // length
    x = data[:n * length].view(n, length)
    y = data[1:n * length + 1].view(n, length)
    losses = [ce(net.logits(net.forward_train(x[i:i + 16])[-1]), y[i:i + 16]) for i in range(0, n, 16)]
    return float(torch.stack(losses).mean()) / math.log(2)


def write_prompts(path: Path, per_category: int = 8, prompt_bytes: int = 48) -> None:
    """Held-out prompts: the first `prompt_bytes` bytes of chapters spread over each held-out book."""
    rows = []
    for category, ref in HELD_OUT.items():
        chapters = read_kjv(ref)
        stride = max(1, len(chapters) // per_category)
        for chapter_id, verses in chapters[::stride][:per_category]:
            text = encode("\n".join(verses))[:prompt_bytes]
            rows.append({"id": f"{category}-{chapter_id}", "category": category,
                         "prompt": bytes(text).decode("utf-8", errors="ignore")})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-steps", type=int, default=300)
    parser.add_argument("--draft-steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    data = corpus(TRAIN_RANGES)
    held_out = torch.cat([corpus([ref])[:16384] for ref in HELD_OUT.values()])
    target = init_gpt(TARGET, seed=0)
    t_hist = train(target, target_loss, data, args.target_steps, args.batch, args.length, 3e-3, 1, "target")
    target.eval().requires_grad_(False)
    draft = init_gpt(DRAFT, seed=2)
    d_hist = train(draft, lambda n, x, y: draft_loss(n, target, x, y), data, args.draft_steps, args.batch,
                   args.length, 3e-3, 3, "draft")
    target.save(args.out / "tiny-kjv-target.safetensors")
    draft.save(args.out / "tiny-kjv-draft.safetensors")
    write_prompts(args.out / "prompts-kjv.jsonl")
    record = {
        "data": "King James Bible (public domain) from Debian bible-kjv-text 4.38 via `bible -f`",
        "train_ranges": TRAIN_RANGES, "held_out": HELD_OUT, "train_bytes": len(data),
        "settings": vars(args) | {"out": str(args.out)},
        "target": {"config": TARGET.__dict__, "final_train_ce": sum(t_hist[-20:]) / len(t_hist[-20:]),
                   "held_out_bits_per_byte": bits_per_byte(target, held_out)},
        "draft": {"config": DRAFT.__dict__, "final_train_ce": sum(d_hist[-20:]) / len(d_hist[-20:]),
                  "held_out_bits_per_byte": bits_per_byte(draft, held_out)},
        "seconds": round(time.time() - start, 1),
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2, default=list) + "\n")
    print(json.dumps(record, indent=2, default=list))


if __name__ == "__main__":
    main()
