"""scripts/bench_ffn.py: the kernel part runs and writes one record per case and engine."""
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerators._sparse_kernels")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_ffn  # noqa: E402


def test_kernel_part_writes_its_records(tmp_path):
    out = tmp_path / "ffn.json"
    bench_ffn.main(["--parts", "kernel", "--rounds", "1", "--loop-s", "0.001", "--out", str(out)])
    data = json.loads(out.read_text())
    recs = data["results"]
    assert len(recs) == 2 * 2 * 2 * 2  # shapes x token counts x threads x engines
    assert {r["engine"] for r in recs} == {"chained", "ffn_int8"}
    assert all(r["speedup_vs_chained"] == 1.0 for r in recs if r["engine"] == "chained")
    assert all(r["latency_p50_ms"] > 0 and r["rounds"] == 1 for r in recs)
    assert data["cpu"] and data["command"].endswith("bench_ffn.py --parts kernel --rounds 1 --loop-s 0.001 --out " + str(out))
    with pytest.raises(SystemExit):
        bench_ffn.main(["--parts", "nope"])


def test_attention_part_writes_its_records(tmp_path):
    out = tmp_path / "att.json"
    bench_ffn.main(["--parts", "attention", "--rounds", "1", "--loop-s", "0.001", "--out", str(out)])
    recs = json.loads(out.read_text())["results"]
    assert len(recs) == 2 * 2 * 2 * 2  # shapes x batch sizes x threads x engines
    assert {r["engine"] for r in recs} == {"chained", "qkv_attention_int8"}
    assert all(r["part"] == "attention" and r["seq_len"] == 128 and r["latency_p50_ms"] > 0 for r in recs)
