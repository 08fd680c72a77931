"""Seeded fuzz of the results reader over damaged files: valid rows with some lines damaged
(truncated, random bytes inserted, non-UTF-8 bytes, replaced by random JSON, a field set to a
value of a random type, non-finite numbers). The reader never raises, every row it returns fits
the schema, and every undamaged row is kept."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from profiler.results import SCHEMA, Result, read_results, row_problem

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 5000))

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(allow_nan=False), st.text(max_size=6))
json_value = st.recursive(json_scalar, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=4), c, max_size=3)),
                          max_leaves=6)


def line_of(i: int, status: str) -> bytes:
    r = Result(cell_id=f"cell{i}", task="t", pruner="none", pruner_params={}, accelerator="torch-fp32",
               accelerator_params={}, batch_size=1 + i, seq_len=16, threads=1, status=status,
               latency_p50_s=0.001 * (i + 1), accuracy=0.5, extra={"accelerator_label": "fp32"})
    return r.to_json().encode()


@st.composite
def damage(draw, line: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "insert", "non-utf8", "json", "field", "nan", "bytes"]))
    if kind == "truncate":
        return line[: draw(st.integers(0, len(line) - 1))]
    if kind == "insert":
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.binary(min_size=1, max_size=4)) + line[at:]
    if kind == "non-utf8":
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + line[at:]
    if kind == "json":
        return json.dumps(draw(json_value)).encode()
    if kind == "field":
        row = json.loads(line)
        row[draw(st.sampled_from(sorted(SCHEMA)))] = draw(json_value)
        return json.dumps(row).encode()
    if kind == "nan":
        row = json.loads(line)
        row[draw(st.sampled_from(["latency_p50_s", "accuracy", "batch_size", "x"]))] = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return json.dumps(row).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity").replace('"-Infinity"', "-Infinity").encode()
    return draw(st.binary(max_size=30))


@st.composite
def damaged_file(draw):
    """(file bytes, cell ids of the undamaged rows)."""
    n = draw(st.integers(1, 6))
    lines, intact = [], []
    for i in range(n):
        line = line_of(i, draw(st.sampled_from(["ok", "failed", "skipped"])))
        if draw(st.booleans()):
            lines.append(draw(damage(line)))
        else:
            lines.append(line)
            intact.append(f"cell{i}")
    data = b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\r\n", b"\n\n"]))
    return data, intact


_DIR = Path(tempfile.mkdtemp(prefix="fuzz-results-"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(damaged_file())
def test_results_reader_fuzz(case):
    data, intact = case
    path = _DIR / "results.jsonl"
    path.write_bytes(data)
    rf = read_results(path)
    assert all(row_problem(r) is None for r in rf.rows)
    ids = [r["cell_id"] for r in rf.rows]
    assert len(ids) == len(set(ids))  # one row per cell
    assert set(intact) <= set(ids), (intact, ids, [str(d) for d in rf.damaged])
    n_lines = data.count(b"\n") + 1
    assert all(1 <= d.line <= n_lines and d.why for d in rf.damaged)
    assert rf.damaged_lines == [d.line for d in rf.damaged]
