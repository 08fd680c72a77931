"""sparsebench's Python API for notebooks: :func:`profile` a model object on your data."""
from sparsebench.api import profile

__all__ = ["profile"]
