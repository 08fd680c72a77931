import pytest

from profiler.config import expand, load_config, parse_config
from profiler.errors import ConfigError
from tests.conftest import tiny_config


def test_quickstart_is_valid_and_has_the_promised_cells():
    cfg = load_config(None)
    cells = expand(cfg)
    # sst2 × (none + magnitude 0.5/0.7/0.9) × (fp32, int8, sparse-cpu, sparse-int8) × batch (1, 8) × seq 128 × 2 threads
    assert len(cells) == 1 * 4 * 4 * 2
    assert {c.accelerator.name for c in cells} == {"torch-fp32", "int8-dynamic", "sparse-cpu", "sparse-int8"}
    assert {c.pruner.params.get("sparsity") for c in cells} == {None, 0.5, 0.7, 0.9}
    assert {c.threads for c in cells} == {2}


def test_sweep_expands_list_params_only_for_scalar_params():
    cfg = parse_config(tiny_config(pruners=[{"name": "magnitude", "sparsity": [0.5, 0.7], "roles": ["ffn_in", "ffn_out"]}]))
    assert [p.params["sparsity"] for p in cfg.pruners] == [0.5, 0.7]
    assert all(p.params["roles"] == ["ffn_in", "ffn_out"] for p in cfg.pruners)


@pytest.mark.parametrize(
    "override, must_say",
    [
        ({"pruners": [{"name": "magnitud"}]}, ["pruners[0].name", "magnitude", "none"]),
        ({"pruners": [{"name": "magnitude", "sparsity": 1.5}]}, ["pruners[0]", "sparsity", "[0, 1)"]),
        ({"pruners": [{"name": "magnitude", "sparsity": [0.5, -0.1]}]}, ["pruners[0]", "sparsity"]),
        ({"pruners": [{"name": "magnitude", "sparsty": 0.5}]}, ["pruners[0].sparsty", "valid parameters", "sparsity"]),
        ({"accelerators": [{"name": "tpu"}]}, ["accelerators[0].name", "torch-fp32", "int8-dynamic"]),
        ({"accelerators": [{"name": "int8-dynamic", "engine": "mkl"}]}, ["accelerators[0]", "engine", "onednn"]),
        ({"tasks": [{"name": "sst2", "data_dir": "/nonexistent"}]}, ["tasks[0]", "data_dir", "missing data file"]),
        ({"meter": {"name": "joulemeter"}}, ["meter.name", "estimate"]),
        ({"meter": {"name": "estimate", "tdp_w": [100, 200]}}, ["meter.tdp_w", "one value, not a list"]),
        ({"matrix": {"batch_size": [0]}}, ["matrix.batch_size"]),
        ({"matrix": {"batchsize": [1]}}, ["matrix.batchsize", "batch_size"]),
        ({"matrix": {"kernel_variant": ["sse"]}}, ["matrix.kernel_variant", "avx512"]),
        ({"measure": {"min_iter": 3}}, ["measure.min_iter", "min_iters"]),
        ({"extras": {}}, ["extras", "valid sections"]),
        ({"matrix": {"threads": [100000]}}, ["matrix.threads", "256"]),
        ({"matrix": {"seq_len": [100000]}}, ["matrix.seq_len", "512"]),
        ({"matrix": {"kernel_variant": []}}, ["matrix.kernel_variant", "non-empty"]),
        ({"matrix": 3}, ["matrix", "table"]),
        ({"measure": 5}, ["measure", "table"]),
        ({"measure": {"warmup_iters": 2.5}}, ["measure.warmup_iters", "integer"]),
        ({"pruners": [{"name": "magnitude", "sparsity": []}]}, ["pruners[0].sparsity", "empty sweep"]),
        ({"pruners": [{"name": "magnitude", "sparsity": [0.5, 0.5]}]}, ["pruners[0].sparsity", "same value twice", "(0.5 and 0.5)"]),
        ({"pruners": [{"name": "magnitude", "sparsity": 0.5}, {"name": "magnitude", "sparsity": 0.5}]},
         ["pruners[1]", "duplicates pruners[0]"]),
        ({"pruners": [{"name": "magnitude", "sparsity": "high"}]}, ["pruners[0].sparsity", "a number"]),
        ({"tasks": [{"name": "tiny-synthetic", "finetune_lr": "fast"}]}, ["tasks[0].finetune_lr", "a number"]),
        ({"tasks": [{"name": "tiny-synthetic", "seed": "x"}]}, ["tasks[0].seed", "an integer"]),
        ({"tasks": [{"name": "tiny-synthetic", "num_heads": 0}]}, ["tasks[0].num_heads", "[1, 64]"]),
        ({"tasks": [{"name": "tiny-synthetic", "hidden_size": 1_000_000}]}, ["tasks[0].hidden_size", "[1, 4096]"]),
        ({"tasks": [{"name": "tiny-synthetic", "num_layers": -1}]}, ["tasks[0]", "num_layers"]),
        ({"run": {"name": "../../escape"}}, ["run.name", "letters"]),
        ({"run": {"name": "a" * 201}}, ["run.name", "at most 200 characters"]),
        ({"run": {"output_dir": ""}}, ["run.output_dir", "non-empty"]),
        ({"run": {"output_dir": "  "}}, ["run.output_dir", "non-empty"]),
        ({"run": {"seed": "abc"}}, ["run.seed", "integer"]),
        ({"meter": {"name": "estimate", "clock": 5}}, ["meter.clock", "unknown parameter"]),
        ({"meter": [{"name": "estimate"}, {"name": "auto"}]}, ["meter", "one [meter] table"]),
    ],
)
def test_invalid_configs_name_the_key_and_choices(override, must_say):
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**override))
    for s in must_say:
        assert s in str(exc.value), (s, str(exc.value))


def test_one_value_written_two_ways_is_one_cell_and_refused_twice():
    """0 and 0.0, or one set of roles in another order, prune the same model: as two cells they would
    be pruned (or trained) twice under two ids. The ids of the spelling given are kept as they were."""
    tables = [
        ([{"name": "magnitude", "sparsity": [0, 0.0]}], r"^pruners\[0\]\.sparsity: the sweep lists the same value "
                                                        r"twice \(0 and 0\.0\); each cell must be unique$"),
        ([{"name": "magnitude", "sparsity": [0.5, 0.9, 0.50]}], r"^pruners\[0\]\.sparsity: .*\(0\.5 and 0\.5\)"),
        ([{"name": "magnitude", "sparsity": 0}, {"name": "magnitude", "sparsity": 0.0}],
         r"^pruners\[1\]: duplicates pruners\[0\] \(magnitude 0\.0 is magnitude 0 written another way: 0 and 0\.0 are one value"),
        ([{"name": "magnitude", "roles": ["attn_q", "ffn_in"]}, {"name": "magnitude", "roles": ["ffn_in", "attn_q"]}],
         r"^pruners\[1\]: duplicates pruners\[0\] \(.* written another way: .*roles one set in any order\)"),
        ([{"name": "magnitude", "roles": ["attn_q", "ffn_in", "attn_q"]}],
         r"^pruners\[0\]: roles: attn_q given twice in \['attn_q', 'ffn_in', 'attn_q'\]; list each role once$"),
        ([{"name": "gmp", "roles": ["ffn_out", "ffn_out"], "steps": 1}], r"^pruners\[0\]: roles: ffn_out given twice"),
    ]
    for pruners, match in tables:
        with pytest.raises(ConfigError, match=match):
            parse_config(tiny_config(pruners=pruners))
    # a sweep whose values differ stays a sweep, and the params keep their spelling (ids unchanged)
    cfg = parse_config(tiny_config(pruners=[{"name": "magnitude", "sparsity": [0, 0.5], "roles": ["ffn_in", "attn_q"]}]))
    assert [p.params["sparsity"] for p in cfg.pruners] == [0, 0.5]
    assert cfg.pruners[0].params["roles"] == ["ffn_in", "attn_q"]


def test_cell_ids_are_stable_and_distinct():
    a = expand(parse_config(tiny_config()))
    b = expand(parse_config(tiny_config()))
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    assert len({c.cell_id for c in a}) == len(a)
    # spelling out a default does not change identity
    c = expand(parse_config(tiny_config(pruners=[{"name": "none"}, {"name": "magnitude", "sparsity": [0.5, 0.9], "scope": "layer"}])))
    assert [x.cell_id for x in c] == [x.cell_id for x in a]


def test_late_params_stay_out_of_the_keys_at_their_defaults():
    """Parameters added after models were cached and cells keyed (a plugin's ``late_params``) are
    left out of the canonical parameters while at their defaults, spelled out or not, so earlier
    caches and run directories keep their keys; any other value is part of the key."""
    def specs(gmp=None, int8=None):
        cfg = parse_config(tiny_config(pruners=[{"name": "gmp", "sparsity": 0.5, "distill": True, **(gmp or {})}],
                                       accelerators=[{"name": "sparse-int8", **(int8 or {})}]))
        return cfg.pruners[0].params, cfg.accelerators[0].params

    pruner, acc = specs()
    assert "distill_text" not in pruner and "distill_text_share" not in pruner and "dense_format" not in acc
    assert "augment" in pruner and "dense_fallback" in acc  # parameters that were there all along
    assert specs({"distill_text": [], "distill_text_share": 0.0}, {"dense_format": "auto"}) == (pruner, acc)
    pruner2, acc2 = specs({"distill_text": ["mrpc"], "distill_text_share": 0.5}, {"dense_format": "csr"})
    assert pruner2["distill_text"] == ["mrpc"] and pruner2["distill_text_share"] == 0.5 and acc2["dense_format"] == "csr"
    assert "teacher_seeds" not in pruner and specs({"teacher_seeds": []}) == (pruner, acc)
    assert specs({"teacher_seeds": [1, 2]})[0]["teacher_seeds"] == [1, 2]


def test_cell_id_golden():
    """Cross-machine joins rely on this exact value not drifting between releases."""
    cells = expand(parse_config(tiny_config()))
    assert cells[0].canonical()["pruner"] == {"name": "none", "params": {}}
    assert len(cells[0].cell_id) == 12 and all(ch in "0123456789abcdef" for ch in cells[0].cell_id)


def test_preflight_rejects_an_explicit_meter_that_is_unavailable(tmp_path):
    from profiler.runner import preflight

    cfg = parse_config(tiny_config(meter={"name": "rapl", "root": str(tmp_path / "no-powercap")}, run={"name": "t", "output_dir": str(tmp_path / "runs")}))
    with pytest.raises(ConfigError, match="meter.name: 'rapl' is unavailable here"):
        preflight(cfg, tmp_path / "cache")
    ok = parse_config(tiny_config(run={"name": "t", "output_dir": str(tmp_path / "runs")}))
    preflight(ok, tmp_path / "cache")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="model cache"):
        preflight(ok, blocker / "cache")


def test_run_directory_lock_refuses_a_second_runner(tmp_path):
    from profiler.runner import RunDirLock

    with RunDirLock(tmp_path):
        with pytest.raises(ConfigError, match="another sparsebench process"):
            with RunDirLock(tmp_path):
                pass
    with RunDirLock(tmp_path):  # released
        pass


#: shipped configs that read a model folder a script writes first (config file name → that folder,
#: relative to the working directory the config is run from)
BUILT_MODELS = {"peers_bert_base.toml": "build/bert-base-shaped"}


def test_every_shipped_config_is_valid(tmp_path, monkeypatch):
    """The recipes, experiments and example configs in scripts/ load and expand (a renamed or
    mistyped parameter fails here, before anyone spends an hour of training on it). A config that
    reads a model folder written by a script is read from a folder holding a small model of that name."""
    from pathlib import Path

    import transformers

    from profiler.tasks.modelsource import minilm_path

    root = Path(__file__).resolve().parents[1] / "scripts"
    paths = sorted(root.glob("configs/**/*.toml")) + sorted(root.glob("experiments/*.toml"))
    assert len(paths) >= 20
    assert {p.name for p in paths} >= set(BUILT_MODELS)
    for path in paths:
        if path.name in BUILT_MODELS:
            with monkeypatch.context() as m:
                m.chdir(tmp_path)
                folder = tmp_path / BUILT_MODELS[path.name]
                small = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=64, num_labels=2)
                transformers.BertForSequenceClassification(small).save_pretrained(folder)
                transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
                cfg = load_config(str(path))
        else:
            cfg = load_config(str(path))
        assert expand(cfg), path


def test_a_byte_order_mark_is_not_part_of_the_config(tmp_path):
    """Editors on Windows save UTF-8 with a BOM; TOML parsers reject it as a statement."""
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeff".encode() + b'[run]\nname = "bom"\n[[tasks]]\nname = "tiny-synthetic"\n'
                     b'[[pruners]]\nname = "none"\n[[accelerators]]\nname = "torch-fp32"\n')
    assert load_config(path).name == "bom"


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    """A run read from one folder and resumed from another names the same files (the manifest and the
    cell ids hold absolute paths); names that are not paths here stay as written."""
    from profiler.config import absolute_paths

    (tmp_path / "d.csv").write_text("text,label\ngood,1\n")
    (tmp_path / "extra.txt").write_text("fine\n")
    (tmp_path / "sst2").mkdir()  # a folder named like a packaged set
    monkeypatch.chdir(tmp_path)
    raw = {"tasks": [{"name": "text-classification", "eval_file": "d.csv", "train_file": ["d.csv", "gone.csv"],
                      "model": "some-org/model"}],
           "pruners": [{"name": "gmp", "distill_text": ["sst2", "extra.txt"]}], "run": {"name": "x"}}
    out = absolute_paths(raw)
    assert out["tasks"][0]["eval_file"] == str(tmp_path / "d.csv")
    assert out["tasks"][0]["train_file"] == [str(tmp_path / "d.csv"), "gone.csv"]
    assert out["tasks"][0]["model"] == "some-org/model"
    assert out["pruners"][0]["distill_text"] == ["sst2", str(tmp_path / "extra.txt")]
    assert raw["tasks"][0]["eval_file"] == "d.csv" and out["run"] is raw["run"]
    one = absolute_paths({"tasks": {"name": "text-classification", "eval_file": "d.csv"}})  # one [tasks] table
    assert one["tasks"] == {"name": "text-classification", "eval_file": str(tmp_path / "d.csv")}


def test_an_unwritable_output_folder_is_not_called_an_invalid_config(tmp_path, capsys):
    from profiler.cli import main
    from tests.faults_util import write_config

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = write_config(tmp_path / "c.toml", tiny_config())
    assert main(["run", str(cfg), "--output-dir", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cannot run: output folder" in err and "invalid config" not in err


def test_a_meter_parameter_outside_its_choices_is_refused_at_config_load(tmp_path, capsys):
    """codecarbon's tracking_mode is "machine" or "process": another value (a capital letter) is a
    config error naming the key and the choices, before the meter is probed or a run folder made
    (it used to read as "codecarbon is unavailable here")."""
    from profiler.cli import main
    from tests.faults_util import write_config

    for bad in ("Machine", "x"):
        cfg = write_config(tmp_path / "c.toml", tiny_config(meter={"name": "codecarbon", "tracking_mode": bad},
                                                            run={"name": "t", "output_dir": str(tmp_path / "runs")}))
        assert main(["run", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert f"invalid config: meter.tracking_mode: must be one of machine, process (got {bad!r})" in err
        assert "unavailable" not in err and not (tmp_path / "runs").exists()
    cfg = parse_config(tiny_config(meter={"name": "codecarbon", "tracking_mode": "process"}))
    assert cfg.meter.params["tracking_mode"] == "process"


def test_labels_tell_apart_a_sweep_over_a_parameter_they_do_not_show():
    """sparse-cpu's min_speedup is not in its label: a sweep over it gets key=value in each label."""
    from profiler.labels import distinct_labels

    cfg = parse_config(tiny_config(accelerators=[{"name": "torch-fp32"}, {"name": "sparse-cpu", "min_speedup": [1.0, 1.2]}]))
    labels = [a.label() for a in cfg.accelerators]
    assert labels == ["torch-fp32", "sparse-cpu min_speedup=1.0", "sparse-cpu min_speedup=1.2"]
    assert [p.label() for p in cfg.pruners] == ["none", "magnitude 0.5", "magnitude 0.9"]  # shown already: unchanged
    assert distinct_labels([("x", {"a": 1}), ("x", {"a": 1})]) == ["x", "x"]  # the same config twice: one label
