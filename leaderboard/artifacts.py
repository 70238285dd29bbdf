"""Finding a run's artifacts by file type: sample grids and frames, audio, video, per-item tables, text.

Only files inside the run's artifact folder are listed (symbolic links are not followed), at a bounded
depth and count, so a huge shard folder cannot stall the page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

KINDS = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".gif"),
    "audio": (".wav", ".flac", ".mp3", ".ogg"),
    "video": (".mp4", ".webm"),
    "table": (".csv", ".tsv", ".jsonl"),
    "text": (".txt", ".log"),
}
MAX_DEPTH = 4
MAX_FILES_SCANNED = 5000
MAX_PER_KIND = {"image": 24, "audio": 8, "video": 4, "table": 4, "text": 4}


@dataclass
class Artifacts:
    root: Path
    found: dict[str, list[Path]] = field(default_factory=lambda: {k: [] for k in KINDS})
    truncated: bool = False

    @property
    def empty(self) -> bool:
        return not any(self.found.values())


def discover(root: str | os.PathLike | None) -> Artifacts | None:
    """The displayable files under `root`, shallow files first, then by name; None if there is no folder."""
    if not root:
        return None
    base = Path(root)
    if not base.is_dir():
        return None
    base = base.resolve()
    result = Artifacts(base)
    by_suffix = {s: kind for kind, suffixes in KINDS.items() for s in suffixes}
    candidates: list[tuple[int, str, Path, str]] = []
    scanned = 0
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        depth = len(Path(dirpath).relative_to(base).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        for name in filenames:
            scanned += 1
            if scanned > MAX_FILES_SCANNED:
                result.truncated = True
                break
            path = Path(dirpath) / name
            kind = by_suffix.get(path.suffix.lower())
            if kind and not name.startswith(".") and not path.is_symlink():
                candidates.append((depth, str(path.relative_to(base)), path, kind))
        if result.truncated:
            break
    for _, _, path, kind in sorted(candidates):
        bucket = result.found[kind]
        if len(bucket) < MAX_PER_KIND[kind]:
            bucket.append(path)
        else:
            result.truncated = True
    return result
