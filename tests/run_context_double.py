"""A typed test double of `harness.api.RunContext`: what a task may use of a run, recorded, nothing run."""

from __future__ import annotations

from pathlib import Path


class FakeContext:
    """Single process, CPU, rank 0: `log` keeps lines in `notes`, `progress` passes the iterable through,
    `artifact` paths go under `run_dir`; sharded generation is not part of the double."""

    device, rank, world_size, is_main = "cpu", 0, 1, True

    def __init__(self, run_dir: Path | None = None):
        self.run_dir = run_dir or Path(".")
        self.notes: list[str] = []
        self.extra_provenance: dict = {}
        self.timings: dict[str, float] = {}

    def log(self, message: str) -> None:
        self.notes.append(message)

    def progress(self, iterable, total=None, desc=""):
        return iterable

    def artifact(self, name: str) -> Path:
        return self.run_dir / name

    def generate_sharded(self, method, requests, write_shard):
        raise NotImplementedError("the test double does not generate; call the task's score() with samples")
