"""Reference methods: models, decoding strategies and checkpoint adapters; each registers itself."""

from harness.registry import import_package_tree

import_package_tree(__name__)
