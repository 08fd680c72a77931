"""Helpers of the fault tests: a TOML writer for configs generated in a test (the standard
library reads TOML but does not write it)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def toml_value(v: Any) -> str:
    """``v`` as a TOML inline value (bool, int, float incl. nan/inf, str, list, inline table)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # TOML has no surrogate-pair escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def toml_text(doc: dict[str, Any]) -> str:
    """A TOML document with one top-level ``key = value`` line per entry of ``doc``."""
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}\n" for k, v in doc.items())


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(toml_text(doc), encoding="utf-8")
    return path
