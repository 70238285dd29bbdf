"""Small hand-made stores for the leaderboard tests, written through the store's own API."""

from __future__ import annotations

import math
import struct
import wave
import zlib
from pathlib import Path

from harness.metrics.base import MetricValue
from harness.signature import Signature
from harness.store import Store

EVIL_LABEL = '<img src=x onerror="window.__xss=1"> **bold** [click](javascript:window.__xss=2) :red[red]'
EVIL_TASK_DESCRIPTION = "<script>window.__xss=3</script> # heading `code` $x^2$"


def add_run(store: Store, *, task: str = "toy-board", method: str | None = "m-a", family: str = "raster-ar",
            source: str = "reproduced", label: str | None = None, protocol: str = "p1",
            metrics: list[MetricValue] | None = None, provenance: dict | None = None,
            artifacts: Path | None = None, error: str | None = None, settings: dict | None = None,
            task_description: str = "a toy board", primary: str = "fid") -> str:
    """One run; finished with `metrics`, or failed with `error`."""
    eval_sig = Signature().add("task", task).add("protocol", protocol)
    sig = Signature(dict(eval_sig.entries)).add("method", method or label).update("method", settings or {})
    run_id = store.create_run(
        task=dict(name=task, version="1", modality="class-to-image", description=task_description,
                  primary_metric=primary),
        method=dict(name=method, family=family, description="test method") if method else None,
        kind="reported" if source == "reported" else "run", source=source, label=label or method or "",
        signature=str(sig), signature_hash=sig.hash, eval_signature=str(eval_sig),
        eval_signature_hash=eval_sig.hash, settings={"method": settings or {}}, provenance=provenance or {},
        artifacts_path=str(artifacts) if artifacts else None,
    )
    if error is not None:
        store.fail_run(run_id, error)
    else:
        store.finish_run(run_id, metrics or [], {})
    return run_id


def fid(value: float, half: float | None = None) -> MetricValue:
    return MetricValue("fid", value, False, "", "1",
                       None if half is None else value - half, None if half is None else value + half)


def score(value: float) -> MetricValue:
    return MetricValue("inception_score", value, True)


def write_png(path: Path, width: int = 8, height: int = 8) -> None:
    """A tiny valid RGB PNG (no imaging library needed)."""
    raw = b"".join(b"\x00" + b"".join(bytes([(x * 30) % 256, (y * 30) % 256, 128]) for x in range(width))
                   for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def write_wav(path: Path, seconds: float = 0.2, rate: int = 16000) -> None:
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * t / rate)))
                      for t in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(frames)


def artifact_folder(root: Path) -> Path:
    """A run folder as tasks write them: a sample grid, audio, a per-sentence table, raw shards."""
    root.mkdir(parents=True, exist_ok=True)
    write_png(root / "samples_grid.png")
    write_wav(root / "sample_000.wav")
    (root / "per_sentence.tsv").write_text("id\thypothesis\treference\tbleu\n0\ta cat\tthe cat\t50.0\n",
                                           encoding="utf-8")
    shard = root / "shards-64" / "shard-00000"
    shard.mkdir(parents=True)
    (shard / "values.npy").write_bytes(b"\x93NUMPY")
    return root
