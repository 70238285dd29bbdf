"""Offline video baselines: moving-digit data, the bundled feature network and a class-conditional generator."""
