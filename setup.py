"""Packaging lives in pyproject.toml; this file is the place for the optional CUDA extension (csrc/),
which is added with the cuda backend. Without it, installing slimkern is pure Python."""

from setuptools import setup

setup()
