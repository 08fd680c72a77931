"""Shared fixtures: a private model cache per test session, tiny configs."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Fine-tuned/pruned model cache in a temp folder, so tests never touch the user's cache."""
    path = tmp_path_factory.mktemp("sparsebench-cache")
    old = os.environ.get("SPARSEBENCH_CACHE")
    os.environ["SPARSEBENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SPARSEBENCH_CACHE", None)
    else:
        os.environ["SPARSEBENCH_CACHE"] = old


def tiny_config(**overrides) -> dict:
    """A tiny-synthetic matrix config dict (seconds to run)."""
    cfg = {
        "run": {"name": "t"},
        "measure": {"warmup_iters": 1, "min_iters": 3, "min_seconds": 0.05, "max_seconds": 2.0, "idle_seconds": 0.05,
                    "visit_seconds": 0.02, "min_rounds": 3},
        "meter": {"name": "estimate"},
        "tasks": [{"name": "tiny-synthetic", "finetune_steps": 60, "n_train": 512, "n_eval": 64}],
        "pruners": [{"name": "none"}, {"name": "magnitude", "sparsity": [0.5, 0.9]}],
        "accelerators": [{"name": "torch-fp32"}, {"name": "int8-dynamic"}],
        "matrix": {"batch_size": [1, 4], "seq_len": [16], "threads": [1]},
    }
    cfg.update(overrides)
    return cfg
