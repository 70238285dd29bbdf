"""Reference methods: models, decoding strategies and checkpoint adapters; each registers itself.

The registry imports the modules of this package on use (see harness/registry.py).
"""
