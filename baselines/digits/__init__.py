"""Bundled offline models for the digits-c2i task: a feature network and a class-conditional generator."""
