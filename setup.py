"""Build script for the C extension; all metadata lives in pyproject.toml."""
from setuptools import setup

setup()
