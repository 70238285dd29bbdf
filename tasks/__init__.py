"""Benchmark protocols: one module per task; each registers itself with `harness.registry.register_task`.

The registry imports the modules of this package on use (see harness/registry.py).
"""
