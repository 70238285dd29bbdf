"""Bundled offline generator for the digits-c2i task (its feature network and data are in harness/features/digits_net.py and harness/datasets/digits.py)."""
