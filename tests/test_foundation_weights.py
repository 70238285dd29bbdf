"""Weight specs: the cache is checked against the pinned sha256; a file the user names is taken as given."""

from __future__ import annotations

import hashlib

import pytest

from harness.errors import ArbenchError, MissingAssetError
from harness.weights import WeightSpec


def test_cache_is_checked_and_explicit_files_are_identified_by_their_own_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    good = b"official weights"
    spec = WeightSpec("w", "w.bin", "https://example.invalid/w.bin", hashlib.sha256(good).hexdigest(), "MIT")
    with pytest.raises(MissingAssetError, match="w.bin.*https://example.invalid/w.bin"):
        spec.locate()
    spec.cache_path.parent.mkdir(parents=True)
    spec.cache_path.write_bytes(b"tampered")
    with pytest.raises(ArbenchError, match="expected"):
        spec.locate()
    spec.cache_path.write_bytes(good)
    assert spec.locate() == (spec.cache_path, spec.sha256)

    mine = tmp_path / "retrained.bin"
    mine.write_bytes(b"my own weights")
    assert spec.locate(str(mine)) == (mine, hashlib.sha256(b"my own weights").hexdigest())
    with pytest.raises(ArbenchError, match="expected"):
        spec.resolve(mine)  # resolve keeps checking an explicit file against the pinned digest
