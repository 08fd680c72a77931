"""scripts/bench_kernel_builds.py: two builds load side by side and every case gets a record."""
import json
import sys
from pathlib import Path

import pytest

sk = pytest.importorskip("accelerators._sparse_kernels")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_kernel_builds  # noqa: E402


def test_a_build_against_itself_writes_one_record_per_case(tmp_path):
    out = tmp_path / "builds.json"
    assert bench_kernel_builds.main(["--base", sk.__file__, "--new", sk.__file__, "--batch", "1", "--rounds", "2",
                                     "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["case"] for r in data["records"]] == ["attention_int8", "qkv_attention_int8", "spmm_int8"]
    assert all(r["base_median_s"] > 0 and r["new_median_s"] > 0 and r["rounds"] == 2 for r in data["records"])
    assert data["builds"]["base"] == data["builds"]["new"] and "/" not in data["builds"]["base"]["file"]
    with pytest.raises(SystemExit, match="matches 0 files"):
        bench_kernel_builds.main(["--base", str(tmp_path / "none*.so")])
