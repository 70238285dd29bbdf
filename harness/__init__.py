"""ARBench harness: the engine (registry, runner, store, signatures, metrics, features)."""

__version__ = "0.1.0"
