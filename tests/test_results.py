import json

from hypothesis import given, strategies as st

from profiler.results import Result, append_result, read_results, repair_tail


def make(**kw):
    base = dict(cell_id="abc", task="t", pruner="magnitude", pruner_params={"sparsity": 0.9}, accelerator="torch-fp32",
                accelerator_params={}, batch_size=8, seq_len=128, threads=2, status="ok")
    base.update(kw)
    return Result(**base)


@given(
    p50=st.floats(min_value=1e-6, max_value=10), acc=st.none() | st.floats(0, 1),
    energy=st.none() | st.floats(0, 100), extra=st.dictionaries(st.sampled_from(["quant_engine", "kernel_variant_used"]), st.text(max_size=5)),
)
def test_result_json_round_trip(p50, acc, energy, extra):
    r = make(latency_p50_s=p50, accuracy=acc, energy_j_per_inference=energy, extra=extra)
    back = Result.from_json(r.to_json())
    assert back == r
    assert json.loads(r.to_json())["latency_p50_s"] == p50  # flat row, units in names


def test_truncated_last_line_is_reported_and_repaired(tmp_path):
    path = tmp_path / "results.jsonl"
    append_result(path, make(cell_id="a"))
    append_result(path, make(cell_id="b"))
    with open(path, "a") as f:
        f.write('{"cell_id": "c", "task"')  # killed mid-write
    rf = read_results(path)
    assert [r["cell_id"] for r in rf.rows] == ["a", "b"] and rf.damaged_lines == [3]
    assert repair_tail(path)
    append_result(path, make(cell_id="c"))
    rf = read_results(path)
    assert [r["cell_id"] for r in rf.rows] == ["a", "b", "c"] and rf.damaged_lines == []
