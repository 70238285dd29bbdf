"""Pretrained networks and reference files as specs: name, official URL, sha256, license.

A spec resolves from an explicit path, or from the local cache `$ARBENCH_HOME/weights/<filename>`.
It downloads only when asked (`arbench weights fetch`) and the network allows; offline, resolving a
missing file raises `MissingAssetError` naming the file, its URL and where to put it. Hashes are
checked once per file version (a sidecar records size and mtime of the verified file).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.config import arbench_home
from harness.errors import ArbenchError, MissingAssetError
from harness.provenance import sha256_file


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable file the harness depends on."""

    name: str
    filename: str
    url: str
    sha256: str | None
    license: str
    description: str = ""

    @property
    def cache_path(self) -> Path:
        return arbench_home() / "weights" / self.filename

    def resolve(self, explicit: str | Path | None = None, verify: bool = True) -> Path:
        """The local path of the file, checked against its sha256; raises MissingAssetError if absent."""
        path = Path(explicit).expanduser() if explicit else self.cache_path
        if not path.is_file():
            raise MissingAssetError(
                f"{self.name}: the file {self.filename} is not at {path}. It is not downloaded at run time. "
                f"Get it from {self.url} (or run `arbench weights fetch {self.name}` where the network allows) "
                f"and put it at {self.cache_path} (set ARBENCH_HOME to move the cache)."
            )
        if verify:
            self.verify(path)
        return path

    def locate(self, explicit: str | Path | None = None) -> tuple[Path, str]:
        """The file and its sha256. Like `resolve`, except that a file the user names explicitly is taken
        as given (a retrained or converted checkpoint) and identified by its own sha256."""
        spec = dataclasses.replace(self, sha256=None) if explicit else self
        path = spec.resolve(explicit or None, verify=False)
        return path, spec.verify(path)

    def verify(self, path: Path) -> str:
        """Check the file's sha256 (cached per size and mtime); returns the digest."""
        stat = path.stat()
        sidecar = path.with_name(path.name + ".sha256.json")
        digest = None
        if sidecar.is_file():
            try:
                known = json.loads(sidecar.read_text())
                if known.get("size") == stat.st_size and known.get("mtime") == stat.st_mtime:
                    digest = known["sha256"]
            except (ValueError, KeyError, OSError):
                digest = None
        if digest is None:
            digest = sha256_file(path)
            try:
                sidecar.write_text(json.dumps({"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest}))
            except OSError:
                pass
        if self.sha256 and digest != self.sha256:
            raise ArbenchError(
                f"{self.name}: {path} has sha256 {digest}, expected {self.sha256}. "
                f"The file is corrupt or a different release; delete it and fetch it again from {self.url}."
            )
        return digest

    def fetch(self, timeout: float = 60.0) -> Path:
        """Download into the cache (temporary name, checked, then renamed)."""
        target = self.cache_path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{self.filename}.")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(self.url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            self.verify(tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise MissingAssetError(
                f"{self.name}: could not download {self.url} ({exc}). Put the file at {target} by hand."
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".sha256.json").unlink(missing_ok=True)
        return target


WEIGHTS: dict[str, WeightSpec] = {}


def register_weights(spec: WeightSpec) -> WeightSpec:
    """Declare a spec so that `arbench weights list|fetch|verify` knows it."""
    existing = WEIGHTS.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"weights {spec.name!r} are declared twice with different specs")
    WEIGHTS[spec.name] = spec
    return spec


def require_all(checks: Iterable[Callable[[], Any]], what: str) -> list[Any]:
    """Run every check (each resolves one weight file, data set or reference file) and return their results;
    when any is missing, raise ONE MissingAssetError naming every missing file with where it goes and how to
    get it, so a user fixes them all at once instead of meeting them one by one.

    >>> require_all([lambda: 1, lambda: 2], "task t")
    [1, 2]
    """
    results, missing = [], []
    for check in checks:
        try:
            results.append(check())
        except MissingAssetError as exc:
            missing.extend(getattr(exc, "missing", None) or [str(exc)])  # a nested list is flattened
    if len(missing) == 1:
        raise MissingAssetError(missing[0])
    if missing:
        error = MissingAssetError(f"{what} needs {len(missing)} files that are missing:\n- " + "\n- ".join(missing))
        error.missing = missing
        raise error
    return results
