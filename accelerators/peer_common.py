"""What the peer-engine accelerators (OpenVINO, ONNX Runtime) share: the package check, the
torch-facing module around a foreign runtime, the export wrapper, and the on-disk cache key.

The engines themselves are optional (``pip install sparsebench[peers]``), so nothing here imports
them; each accelerator imports its engine inside ``availability``/``prepare``.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from accelerators.base import PrepareSettings, logits_of

#: the model inputs a peer graph may take, in the order of the export wrapper's arguments
INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
INSTALL_HINT = "pip install sparsebench[peers]"


def import_status(*packages: str) -> tuple[bool, str]:
    """``(True, "")`` when every package imports; else ``(False, reason)`` naming each one that
    does not and the extra that installs them. Never raises."""
    problems = []
    for pkg in packages:
        try:
            importlib.import_module(pkg)
        except ImportError as exc:
            problems.append(f"package {pkg!r} is not installed ({exc})")
        except Exception as exc:  # a broken install (ABI mismatch, missing shared library)
            problems.append(f"package {pkg!r} failed to import ({type(exc).__name__}: {exc})")
    if problems:
        return False, f"{'; '.join(problems)}; {INSTALL_HINT}"
    return True, ""


def input_names(model: nn.Module, example: dict[str, torch.Tensor]) -> list[str]:
    """The names of :data:`INPUT_NAMES` that ``example`` holds and ``model.forward`` accepts, in
    :data:`INPUT_NAMES` order (e.g. DistilBERT takes no ``token_type_ids``). Raises ValueError
    without ``input_ids``."""
    params = inspect.signature(model.forward).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    names = [n for n in INPUT_NAMES if n in example and (takes_any or n in params)]
    if "input_ids" not in names:
        raise ValueError(f"the example batch needs 'input_ids' (got {sorted(example)})")
    return names


class LogitsOnly(nn.Module):
    """Export wrapper: named positional inputs in, the logits tensor (batch, labels) out, so the
    exported graph has exactly the inputs of :data:`INPUT_NAMES` it was traced with and one output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return logits_of(self.model(**{k: v for k, v in given.items() if v is not None}))


@contextlib.contextmanager
def quiet_trace() -> Iterator[None]:
    """Silence what tracing a transformers model prints: TracerWarnings about Python-constant
    shapes (constant for encoders: the mask is as long as the input), deprecation notices, the
    ONNX exporter's note on negative indices, and transformers' own log lines; errors still raise."""
    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # the indexed tensors are token ids and positions, never negative
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            yield
    finally:
        log.setLevel(level)


class PeerModule(nn.Module):
    """A foreign runtime behind the torch face the profiler times and evaluates.

    ``run(feeds)`` takes ``{name: int64 ndarray (batch, seq)}`` for ``names`` and returns the
    logits ndarray (batch, labels). ``serialized`` (the engine's model file, bytes) is kept as a
    uint8 buffer so that the state_dict's size is the size of what the engine runs.
    """

    def __init__(self, names: list[str], run: Callable[[dict[str, np.ndarray]], np.ndarray], serialized: bytes) -> None:
        super().__init__()
        self.names = list(names)
        self._run = run
        self.register_buffer("serialized", torch.frombuffer(bytearray(serialized), dtype=torch.uint8) if serialized
                             else torch.zeros(0, dtype=torch.uint8))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits, fp32 (batch, labels). Inputs: int tensors (batch, seq); a missing mask means
        all ones, missing token types all zeros; an input the graph does not take is ignored."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (batch, seq), got shape {tuple(input_ids.shape)}")
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        defaults = {"attention_mask": torch.ones_like, "token_type_ids": torch.zeros_like}
        feeds = {}
        for name in self.names:
            t = given[name] if given[name] is not None else defaults[name](input_ids)
            if t.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids {tuple(input_ids.shape)}")
            feeds[name] = t.detach().to(torch.int64).contiguous().numpy()
        return torch.from_numpy(np.asarray(self._run(feeds), dtype=np.float32))


def weights_digest(model: nn.Module) -> str:
    """sha256 (hex) of the model's class, config and every state_dict tensor (name, dtype, shape,
    bytes): equal digests mean the same function, so a cached artefact built from it is valid."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def arrays_digest(batches: list[dict[str, np.ndarray]]) -> str:
    """sha256 (hex) of a list of named int arrays, in order (the calibration data's identity)."""
    h = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            a = np.ascontiguousarray(batch[name])
            h.update(f"{name}|{a.dtype}|{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()


def cache_root(settings: PrepareSettings) -> Path:
    """Folder for peer artefacts: ``settings.cache_dir``/peers, else ``$SPARSEBENCH_CACHE``/peers,
    else ``~/.cache/sparsebench/peers`` (the same root as the fine-tuned and pruned models)."""
    base = settings.cache_dir or os.environ.get("SPARSEBENCH_CACHE") or Path.home() / ".cache" / "sparsebench"
    return Path(base) / "peers"


def calibration_batches(settings: PrepareSettings, n: int, names: list[str]) -> list[dict[str, np.ndarray]]:
    """Up to ``n`` calibration batches from ``settings.calibration`` as ``{name: int64 ndarray}``
    restricted to ``names``. Raises RuntimeError when the settings carry no calibration data, or
    it yields nothing."""
    if settings.calibration is None:
        raise RuntimeError("INT8 post-training quantization needs calibration data: PrepareSettings.calibration is None "
                           "(the runner passes the task's training examples)")
    out = []
    for batch in settings.calibration(n):
        out.append({k: batch[k].detach().to(torch.int64).contiguous().numpy() for k in names if k in batch})
        if len(out) >= n:
            break
    if not out:
        raise RuntimeError("PrepareSettings.calibration yielded no batches")
    return out
