import pandas as pd
import pytest

from reports.frame import add_savings, kernel_variant_text, pareto_front
from reports.multiply import multiply_table


def row(pruner, acc, p50, energy, method="estimated", accuracy=0.9, sparsity=None, batch=8):
    return dict(task="t", batch_size=batch, seq_len=128, threads=2, kernel_variant="auto", status="ok", pruner=pruner,
                pruner_label=pruner if sparsity is None else f"{pruner} {sparsity}", accelerator=acc, accelerator_label=acc, latency_p50_s=p50,
                energy_j_per_inference=energy, energy_method=method, accuracy=accuracy)


def test_savings_against_dense_fp32_of_same_group():
    df = add_savings(pd.DataFrame([
        row("none", "torch-fp32", 0.10, 2.0), row("magnitude", "torch-fp32", 0.05, 1.0, accuracy=0.45, sparsity=0.9),
        row("magnitude", "int8-dynamic", 0.04, 1.0, method="measured", sparsity=0.9),
        row("magnitude", "torch-fp32", 0.05, 1.0, batch=1, sparsity=0.9),  # no baseline at batch 1
    ]))
    assert df.loc[1, "latency_savings_factor"] == pytest.approx(2.0)
    assert df.loc[1, "energy_savings_factor"] == pytest.approx(2.0)
    assert df.loc[1, "accuracy_kept"] == pytest.approx(0.5)
    assert pd.isna(df.loc[2, "energy_savings_factor"])  # never a ratio of measured over estimated
    assert pd.isna(df.loc[3, "latency_savings_factor"])


def test_pareto_front_golden():
    df = pd.DataFrame({"cost": [1.0, 2.0, 3.0, 2.5, 1.0], "accuracy": [0.80, 0.90, 0.95, 0.85, 0.70]})
    assert pareto_front(df, "cost").tolist() == [True, True, True, False, False]


def test_multiply_table_product_vs_measured():
    df = add_savings(pd.DataFrame([
        row("none", "torch-fp32", 0.12, 3.0), row("none", "int8-dynamic", 0.06, 1.5, accuracy=0.89),
        row("magnitude", "sparse-cpu", 0.04, 1.0, sparsity=0.9, accuracy=0.88),
        row("magnitude", "sparse-int8", 0.03, 0.75, sparsity=0.9, accuracy=0.87),
    ]))
    t = multiply_table(df)
    assert len(t) == 1
    r = t.iloc[0]
    assert (r["latency_sparse"], r["latency_int8"], r["latency_both"]) == pytest.approx((3.0, 2.0, 4.0))
    assert r["latency_product"] == pytest.approx(6.0)
    assert r["energy_product"] == pytest.approx(6.0) and r["energy_both"] == pytest.approx(4.0)
    assert r["acc_kept_both"] == pytest.approx(0.87 / 0.9)


def test_kernel_variant_text_names_what_auto_ran():
    assert kernel_variant_text("auto", "avx512") == "auto→avx512"
    assert kernel_variant_text("avx2", "avx2") == "avx2"
    assert kernel_variant_text("auto", None) == "auto"  # no sparse kernel in the cell
    assert kernel_variant_text("auto", float("nan")) == "auto"
    assert kernel_variant_text("auto", "avx2, avx512") == "auto"  # a target whose cells ran several
    assert kernel_variant_text(None, None) == "auto"


def test_mixed_energy_factor_only_when_allowed():
    rows = pd.DataFrame([row("none", "torch-fp32", 0.10, 2.0), row("none", "cuda-fp16", 0.02, 0.5, method="measured")])
    assert pd.isna(add_savings(rows).loc[1, "energy_savings_factor"]) and not add_savings(rows).loc[1, "energy_mixed"]
    mixed = add_savings(rows, allow_mixed_energy=True)
    assert mixed.loc[1, "energy_savings_factor"] == pytest.approx(4.0) and mixed.loc[1, "energy_mixed"]
    assert not mixed.loc[0, "energy_mixed"]


def test_models_note_names_the_dense_finetune_and_each_pruners_training():
    from reports.report import _models_note

    df = pd.DataFrame([
        {**row("none", "torch-fp32", 0.1, 1.0), "task": "sst2", "task_key": "6da2feac19ba",
         "dense_finetune": {"steps": 6315, "precision": "bf16", "steps_per_s": 9.5, "wall_time_s": 665.0}},
        {**row("gmp", "sparse-int8", 0.05, 1.0, sparsity=0.9), "task": "sst2", "task_key": "6da2feac19ba", "dense_finetune": {"steps": 6315},
         "pruner_training": {"steps": 12000, "precision": "fp32", "steps_per_s": 4.25, "wall_time_s": 2824.0}},
    ])
    html = _models_note(df)
    assert "dense model of sst2: fine-tuned 6315 steps, bf16, 9.50 steps/s, 665 s" in html  # the task, not its key
    assert "gmp 0.9: trained 12000 steps, fp32, 4.25 steps/s, 2824 s" in html
    assert _models_note(pd.DataFrame([row("none", "torch-fp32", 0.1, 1.0)])) == ""
    two = pd.concat([df, df.assign(task_key="0123456789ab", dense_finetune=[{"steps": 10}] * 2)], ignore_index=True)
    html = _models_note(two)  # one name, two tasks (two data sets): the short key tells them apart
    assert "dense model of sst2 [6da2fe]: fine-tuned 6315 steps" in html and "dense model of sst2 [012345]: fine-tuned 10 steps" in html


def test_chart_categories_keep_cells_of_other_threads_and_tasks_apart():
    from reports.frame import shape_labels

    rows = [row("none", "torch-fp32", 0.1, 1.0) | {"threads": t} for t in (1, 2)]
    assert list(shape_labels(pd.DataFrame(rows))) == ["b8 t1", "b8 t2"]
    one = pd.DataFrame([row("none", "torch-fp32", 0.1, 1.0)])
    assert list(shape_labels(one)) == ["b8"]
    tasks = pd.DataFrame([row("none", "torch-fp32", 0.1, 1.0) | {"task": n, "task_key": n} for n in ("sst2", "mrpc")])
    assert list(shape_labels(tasks)) == ["sst2 b8", "mrpc b8"]
    t = multiply_table(add_savings(pd.DataFrame([
        r | {"threads": th} for th in (1, 2) for r in (
            row("none", "torch-fp32", 0.12, 3.0), row("none", "int8-dynamic", 0.06, 1.5, accuracy=0.89),
            row("magnitude", "sparse-cpu", 0.04, 1.0, sparsity=0.9, accuracy=0.88),
            row("magnitude", "sparse-int8", 0.03, 0.75, sparsity=0.9, accuracy=0.87))])))
    assert len(t) == 2 and list(shape_labels(t)) == ["b8 t1", "b8 t2"]


def test_thread_scaling_section_names_cells_slower_with_more_threads():
    from reports.report import _thread_scaling

    def scaled(acc, th, f, lo, hi):
        return row("none", acc, 0.01, 1.0) | {"label": f"none + {acc}", "threads": th, "thread_scaling_factor": f, "thread_scaling_factor_low": lo,
                                             "thread_scaling_factor_high": hi, "thread_scaling_reference_threads": 1}
    df = add_savings(pd.DataFrame([
        scaled("torch-fp32", 1, 1.0, 1.0, 1.0), scaled("torch-fp32", 2, 1.8, 1.7, 1.9),
        scaled("sparse-int8", 1, 1.0, 1.0, 1.0), scaled("sparse-int8", 2, 0.93, 0.9, 0.97),
    ]))
    html = _thread_scaling(df)
    assert "Thread scaling" in html and "1 cell(s) are slower with more threads" in html
    warning = html.split("<div class='warn'>", 1)[1].split("</div>", 1)[0]
    assert "sparse-int8" in warning and "0.93" in warning and "torch-fp32" not in warning
    assert "none + sparse-int8 b8 t2 (0.93×)" in warning  # the thread count shows: the run has two
    one = add_savings(pd.DataFrame([row("none", "torch-fp32", 0.01, 1.0) | {"label": "x", "thread_scaling_factor": None,
                                                                             "thread_scaling_reference_threads": None}]))
    assert _thread_scaling(one) == ""
