"""Streaming speed of LLMVoX's network at its released size: first-packet latency and chunk RTF.

    python benchmarks/tts_streaming_bench.py [--device cpu|cuda] [--utterances 4] [--seconds 4] [--out FILE]

The released weights cannot be downloaded here, so the networks (the 4-layer, width-768 nanoGPT decoder with
8192 positions and 4096 speech tokens; WavTokenizer's 12-block decoder) are built at their released sizes with
seeded random weights. Speed does not depend on the weights' values, but the length does: random weights never
emit the end-of-audio token, so every utterance runs to `--seconds` (75 tokens per second), chunked as upstream
(10, 30, 90, 270, ... tokens). Measured with `harness.timing.stream_timing` (device synchronised at every chunk)
after one warm-up stream: first-packet latency (call -> first 10-token chunk of audio ready) and each chunk's
compute time over its audio duration. The text front end and the vocoder are inside the timer; no LLM is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines.tts.llmvox import LLMVoX, LLMVoXConfig, LLMVoXDecoder, LLMVoXModels, LLMVoXSettings  # noqa: E402
from baselines.tts.llmvox import resized_text_embedding  # noqa: E402
from baselines.tts.wavtokenizer import WavTokenizerConfig, WavTokenizerDecoder  # noqa: E402
from harness.api import Request  # noqa: E402
from harness.provenance import hardware_fingerprint  # noqa: E402
from harness.timing import stream_timing, streaming_summary  # noqa: E402

TEXTS = ["Please call Stella and ask her to bring these things with her from the store",
         "The birch canoe slid on the smooth planks",
         "Glue the sheet to the dark blue background",
         "It is easy to tell the depth of a well"]


def released_models(device: str) -> LLMVoXModels:
    torch.manual_seed(0)
    cfg = LLMVoXConfig()
    decoder = LLMVoXDecoder(cfg)
    vocoder = WavTokenizerDecoder(WavTokenizerConfig())
    torch.nn.init.normal_(vocoder.codebook, std=0.1)
    text = resized_text_embedding(torch.randn(384, cfg.text_dim))
    return LLMVoXModels(decoder.to(device).eval(), text.to(device), vocoder.to(device).eval())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--utterances", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    method = LLMVoX(LLMVoXSettings(max_seconds=args.seconds), device=args.device,
                    models=released_models(args.device))
    requests = [Request(i, f"u{i}", 0, {"text": TEXTS[i % len(TEXTS)]}) for i in range(args.utterances)]
    measured = stream_timing(method.stream, requests, lambda chunk: len(chunk[0]) / chunk[1], warmup=1,
                             device=args.device)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "hardware": hardware_fingerprint(args.device), "load_average": os.getloadavg(),
        "torch_threads_while_streaming": 1 if args.device == "cpu" else torch.get_num_threads(),
        "seconds_per_utterance": args.seconds,
        **streaming_summary(measured),
        "rtf_whole_utterance": [round(m.rtf, 4) for m in measured],
        "chunk_seconds": [[round(s, 4) for s in m.chunk_seconds] for m in measured],
        "chunk_audio_seconds": [[round(d, 4) for d in m.durations] for m in measured],
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
