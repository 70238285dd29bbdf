"""Benchmark protocols: one module per task; each registers itself with `harness.registry.register_task`."""

from harness.registry import import_package_tree

import_package_tree(__name__)
