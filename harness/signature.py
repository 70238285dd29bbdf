"""Signatures: every setting that can change a number, as one canonical string and hash.

Like sacreBLEU's signature, it renders as `key:value|key:value|...` with keys in a fixed order
(the order they were declared in), so two numbers are comparable exactly when their signatures
agree. The hash is the first 16 hex digits of the SHA-256 of the canonical string.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


def canonical_value(value: Any) -> str:
    """A stable text form for a setting: JSON for containers, repr-free for scalars."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


@dataclass
class Signature:
    """An ordered set of `key -> value` settings that together identify how a number was produced."""

    entries: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> "Signature":
        if "|" in key or ":" in key:
            raise ValueError(f"signature key {key!r} may not contain '|' or ':'")
        self.entries[key] = canonical_value(value).replace("|", "/")
        return self

    def update(self, prefix: str, settings: Mapping[str, Any]) -> "Signature":
        for key in sorted(settings):
            self.add(f"{prefix}.{key}" if prefix else key, settings[key])
        return self

    def __str__(self) -> str:
        return "|".join(f"{k}:{v}" for k, v in self.entries.items())

    @property
    def hash(self) -> str:
        return hashlib.sha256(str(self).encode()).hexdigest()[:16]

    def subset(self, keys_to_drop: tuple[str, ...]) -> "Signature":
        """The signature without the given keys (or key prefixes ending with '.')."""
        kept = {
            k: v for k, v in self.entries.items()
            if not any(k == d or (d.endswith(".") and k.startswith(d)) for d in keys_to_drop)
        }
        return Signature(dict(kept))

    @classmethod
    def parse(cls, text: str) -> "Signature":
        entries: dict[str, str] = {}
        for part in filter(None, text.split("|")):
            key, _, value = part.partition(":")
            entries[key] = value
        return cls(entries)

    def diff(self, other: "Signature") -> dict[str, tuple[str | None, str | None]]:
        """Keys whose values differ between two signatures: {key: (mine, theirs)}."""
        keys = list(dict.fromkeys([*self.entries, *other.entries]))
        return {
            k: (self.entries.get(k), other.entries.get(k))
            for k in keys
            if self.entries.get(k) != other.entries.get(k)
        }
