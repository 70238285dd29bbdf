"""Offline video baselines: a class-conditional moving-digits generator (data in harness/datasets/moving_digits.py, feature network in harness/features/digit_motion_net.py)."""
