"""text-classification on every supported architecture: tiny random models loaded back from a
folder, pruned to 90 %, run through every CPU accelerator; data files and their errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from accelerators.base import PrepareSettings, logits_of
from accelerators.roles import linears_by_role
from profiler.plugins import ACCELERATORS
from profiler.tasks.text_classification import TextClassification
from pruners.magnitude import MagnitudePruner
from tests.tiny_family import ARCHITECTURES, save_tiny_model, sentences, write_jsonl

#: accelerator name, params (no timing-based choices, so tiny layers still go sparse), fp32 path?
CPU_ACCELERATORS = [
    ("torch-fp32", {}, True),
    ("int8-dynamic", {}, False),
    ("bf16", {}, False),
    ("sparse-cpu", {"calibrate": False, "check_model": False}, True),
    ("sparse-int8", {"calibrate": False, "check_model": False}, False),
    ("onnxruntime", {}, True),
    ("openvino", {}, True),
]


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_csv(d / "reviews.csv", ["review", "other", "stars"], sentences(48))
    write_jsonl(d / "reviews.jsonl", [{"t": a, "y": y} for a, _, y in sentences(32, seed=1)])
    return d


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: save_tiny_model(root / arch, arch) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_family_pruned_through_every_cpu_accelerator(arch, model_dirs, data_dir):
    task = TextClassification(model=str(model_dirs[arch]), eval_file=str(data_dir / "reviews.csv"),
                              text_column="review", text_pair_column="other", label_column="stars")
    model = task.base_model()
    report = MagnitudePruner(sparsity=0.9).prune(model, task)
    layers = linears_by_role(model)
    assert len(layers) == 6 * 2
    for name, lin in layers.items():  # exact: 90 % of each matrix is a whole number of entries
        assert int((lin.weight == 0).sum()) == round(0.9 * lin.weight.numel()), name
    assert report.sparsity_prunable == pytest.approx(0.9, abs=1e-12)
    example = task.example_inputs(2, 16)
    inputs, _ = task.collate(task.eval_examples()[:8])
    with torch.inference_mode():
        ref = logits_of(model(**inputs)).float()
    for name, params, fp32 in CPU_ACCELERATORS:
        acc = ACCELERATORS.build(name, params, name)
        settings = PrepareSettings(threads=1, batch_size=2, seq_len=16, calibration=task.calibration_inputs)
        ok, why = acc.availability(settings)
        if not ok:
            continue
        prepared = acc.prepare(model, example, settings)
        with torch.inference_mode():
            got = logits_of(prepared.module(**inputs)).float()
        assert got.shape == ref.shape, name
        if fp32:
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            assert err <= 1e-4, f"{arch} {name}: relative error {err:.2e}"
        else:
            assert torch.equal(got.argmax(-1), ref.argmax(-1)), f"{arch} {name}: predictions differ"
        if name == "sparse-cpu":
            assert prepared.fields["sparse_layers"] == 12
            if arch == "distilbert":
                assert prepared.fields["fused_encoder_layers"] == 0
                assert "BERT layer layout" in prepared.fields["fused_encoder_note"]
            else:
                assert prepared.fields["fused_encoder_layers"] == 2, prepared.fields["fused_encoder_note"]


def test_jsonl_data_and_custom_columns(model_dirs, data_dir):
    task = TextClassification(model=str(model_dirs["bert"]), eval_file=str(data_dir / "reviews.jsonl"),
                              train_file=str(data_dir / "reviews.jsonl"), text_column="t", label_column="y",
                              metric="f1")
    assert len(task.eval_examples()) == 32 and task.metric_name == "f1"
    metrics = task.evaluate_metrics(task.base_model())
    assert list(metrics) == ["f1", "accuracy"] and 0.0 <= metrics["f1"] <= 1.0


def test_glue_presets_pick_headline_and_companion_metrics(tmp_path):
    mrpc_model = save_tiny_model(tmp_path / "cls", "bert")
    stsb_model = save_tiny_model(tmp_path / "reg", "roberta", num_labels=1)
    mrpc = TextClassification(model=str(mrpc_model), glue="mrpc")
    stsb = TextClassification(model=str(stsb_model), glue="stsb")
    assert (mrpc.metric_name, mrpc.also_metrics, mrpc.num_labels) == ("f1", ("accuracy",), 2)
    assert (stsb.metric_name, stsb.also_metrics, stsb.num_labels) == ("spearman", ("pearson",), 1)
    assert len(mrpc.eval_examples()) == 408 and len(stsb.eval_examples()) == 1500
    assert mrpc.eval_examples()[0].token_type_ids[-1] == 1  # sentence pairs keep their segment ids
    assert set(mrpc.evaluate_metrics(mrpc.base_model())) == {"f1", "accuracy"}


def test_pair_task_distils_on_sentence_pairs_as_two_segments(tmp_path):
    """distill_text on a pair task: the source's pairs, tokenized as the task's own examples."""
    mrpc = TextClassification(model=str(save_tiny_model(tmp_path / "cls", "bert")), glue="mrpc")
    pairs = mrpc.unlabeled_texts("stsb")
    assert pairs and all(isinstance(p, tuple) and len(p) == 2 and all(p) for p in pairs)
    (ex,) = mrpc.encode_texts([pairs[0]])
    want = mrpc.tokenizer(*pairs[0], truncation=True, max_length=mrpc.max_length)
    assert ex.input_ids == want["input_ids"] and ex.token_type_ids == want["token_type_ids"] and ex.label == 0
    assert ex.token_type_ids[0] == 0 and ex.token_type_ids[-1] == 1
    with pytest.raises(ValueError, match="holds single sentences.*use mrpc, stsb"):
        mrpc.unlabeled_texts("sst2")


def test_a_distill_text_source_that_does_not_fit_a_task_fails_when_the_config_is_read(tmp_path):
    """A single-sentence set (or a .txt line without a tab) for a sentence-pair task is refused by
    parse_config, naming the pruner and the task, before any work; a fitting source passes."""
    from profiler.config import parse_config
    from profiler.errors import ConfigError
    from tests.conftest import tiny_config

    model = str(save_tiny_model(tmp_path / "cls", "bert"))

    def config(source: str) -> dict:
        return tiny_config(tasks=[{"name": "text-classification", "model": model, "glue": "mrpc"}],
                           pruners=[{"name": "none"}, {"name": "gmp", "sparsity": 0.5, "distill": True,
                                                        "distill_text": [source], "distill_text_share": 0.25}])

    with pytest.raises(ConfigError, match=r"^pruners\[1\]: text source 'sst2' holds single sentences.*"
                                          r"\(tasks\[0\]: text-classification"):
        parse_config(config("sst2"))
    lines = tmp_path / "pairs.txt"
    lines.write_text("a cat sat\ta cat was sitting\nno tab here\n")
    with pytest.raises(ConfigError, match=r"^pruners\[1\]: .*line 2: a pair task needs two tab-separated texts"):
        parse_config(config(str(lines)))
    assert parse_config(config("stsb")).pruners[1].params["distill_text"] == ["stsb"]


def test_a_regression_head_defaults_to_pearson(tmp_path):
    """No metric given: a model with one output is scored by correlation, not refused for accuracy."""
    model = save_tiny_model(tmp_path / "reg", "bert", num_labels=1)
    write_csv(tmp_path / "scores.csv", ["text", "label"], [(f"sentence {i}", i / 4) for i in range(8)])
    task = TextClassification(model=str(model), eval_file=str(tmp_path / "scores.csv"))
    assert (task.metric_name, task.also_metrics, task.regression) == ("pearson", ("spearman",), True)
    with pytest.raises(ValueError, match="'accuracy' needs a classification head"):  # asked for: refused
        TextClassification(model=str(model), eval_file=str(tmp_path / "scores.csv"), metric="accuracy")


def test_metrics_golden():
    from profiler.tasks.textdata import compute_metric

    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0, 1])
    assert compute_metric("accuracy", logits, labels) == 0.75
    assert compute_metric("f1", logits, labels) == pytest.approx(0.8)  # tp 2, fp 1, fn 0
    assert compute_metric("matthews", logits, labels) == pytest.approx(1 / 3 ** 0.5)
    pred, gold = torch.tensor([[1.0], [2.0], [3.0], [5.0]]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert compute_metric("spearman", pred, gold) == pytest.approx(0.8)
    assert compute_metric("pearson", pred, gold) == pytest.approx(0.8315218, abs=1e-6)


def _broken_folder(src: Path, dst: Path, drop: tuple[str, ...]) -> Path:
    import shutil

    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


@pytest.mark.parametrize("case", ["no-weights", "no-tokenizer", "missing-column", "label-range", "regression-metric",
                                  "empty-file", "header-only", "not-utf8", "extra-field", "folder", "hub-offline",
                                  "unsupported-arch", "label-unseen-in-training", "truncated-weights",
                                  "missing-shard", "index-without-weight-map", "tokenizer-of-another-model", "config-of-another-size",
                                  "more-layers-than-saved", "more-layers-than-saved-new-head", "head-the-weights-lack",
                                  "safetensors-shard-missing-beside-a-bin", "string-label-new-head",
                                  "score-label-new-head", "damaged-tokenizer-json", "config-not-json",
                                  "config-num-labels-a-string", "vocab-without-unk", "data-dir-without-glue",
                                  "blank-text"])
def test_bad_input_is_a_clear_error_before_any_work(case, model_dirs, data_dir, tmp_path, monkeypatch):
    model, kw = str(model_dirs["bert"]), {"eval_file": str(data_dir / "reviews.csv"), "text_column": "review",
                                           "label_column": "stars"}
    if case == "no-weights":
        model, match = str(_broken_folder(model_dirs["bert"], tmp_path / "m", ("model.safetensors",))), "no weights"
    elif case == "no-tokenizer":
        drop = ("vocab.txt", "tokenizer.json")
        model, match = str(_broken_folder(model_dirs["bert"], tmp_path / "m", drop)), "no tokenizer"
    elif case == "missing-column":
        kw["text_column"], match = "sentence", r"column\(s\) \['sentence'\] missing"
    elif case == "label-range":
        write_jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": 0}, {"text": "bad", "label": 3}])
        kw, match = {"eval_file": str(tmp_path / "d.jsonl")}, r"labels \[3\] are outside the model head's range 0..1"
    elif case == "label-unseen-in-training":  # a new head learns only the classes of the training set
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
        write_jsonl(tmp_path / "t.jsonl", [{"text": "good", "label": 0}, {"text": "bad", "label": 2}])
        write_jsonl(tmp_path / "d.jsonl", [{"text": "fine", "label": 1}, {"text": "bad", "label": 2}])
        model, kw = str(folder), {"eval_file": str(tmp_path / "d.jsonl"), "train_file": str(tmp_path / "t.jsonl"),
                                  "finetune_steps": 1}
        match = r"labels \[1\] never occur in .*t.jsonl"
    elif case == "truncated-weights":  # a copy cut short: found from the header, before any cell fails
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        model, match = str(folder), r"model\.safetensors cannot be read: .*not fully covered"
    elif case == "missing-shard":
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ("model.safetensors",))
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
        model, match = str(folder), "names the shard model-00001-of-00002.safetensors, which is not in the folder"
    elif case == "index-without-weight-map":
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ("model.safetensors",))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
        model, match = str(folder), r"index\.json cannot be read: it has no weight_map"
    elif case == "tokenizer-of-another-model":  # every cell would fail with an embedding index error
        from transformers import AutoTokenizer

        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        tok = AutoTokenizer.from_pretrained(folder)
        tok.add_tokens([f"word{i}" for i in range(40)])
        tok.save_pretrained(folder)
        model, match = str(folder), r"has \d+ tokens, but the model's word embedding has \d+ rows"
    elif case == "config-of-another-size":  # transformers would refuse only when the first cell loads it
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "vocab_size": 5}))
        model, match = str(folder), r"do not fit its config.json: 1 tensor\(s\) of another shape, e.g. bert.embeddings.word_embeddings.weight \[\d+, 40\] \(config: \[5, 40\]\)"
    elif case in ("more-layers-than-saved", "more-layers-than-saved-new-head"):
        # transformers would start the third layer at random, without a word
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        cfg = json.loads((folder / "config.json").read_text())
        cfg["num_hidden_layers"] = 3
        if case.endswith("new-head"):
            cfg["architectures"] = ["BertModel"]
            kw.update(train_file=kw["eval_file"], finetune_steps=1)
        (folder / "config.json").write_text(json.dumps(cfg))
        model, match = str(folder), r"describes 3 encoder layers, its weights hold 2 \(no tensors of layer\(s\) \[2\]"
    elif case == "head-the-weights-lack":  # architectures promise a head: transformers would start it at random
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        from safetensors.torch import load_file, save_file

        w = load_file(folder / "model.safetensors")
        save_file({k: v for k, v in w.items() if not k.startswith("classifier.")}, folder / "model.safetensors",
                  metadata={"format": "pt"})
        model, match = str(folder), r"names a sequence-classification model \(BertForSequenceClassification\), but its weights hold no head \(classifier\)"
    elif case == "safetensors-shard-missing-beside-a-bin":  # transformers reads the safetensors index first
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ("model.safetensors",))
        (folder / "pytorch_model.bin").write_bytes(b"")
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}))
        model, match = str(folder), "names the shard model-00001-of-00002.safetensors, which is not in the folder"
    elif case in ("string-label-new-head", "score-label-new-head"):
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
        label = "neg" if case == "string-label-new-head" else 3.5
        write_jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": label}, {"text": "bad", "label": 0}])
        model, kw = str(folder), {"eval_file": str(tmp_path / "d.jsonl"), "train_file": str(tmp_path / "d.jsonl"),
                                  "finetune_steps": 1}
        # the saved config's default LABEL_0 / LABEL_1 are not offered as this new head's classes
        match = r"is not a class index \(0, 1, \.\.\.; the model's config names no labels\): a new head .* metric = \"pearson\""
    elif case == "damaged-tokenizer-json":  # json's own message names no file
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        (folder / "tokenizer.json").write_text("")
        model, match = str(folder), (r"^model: .*m: cannot read its tokenizer files \(tokenizer\.json, vocab\.txt.*\) "
                                     r"\(JSONDecodeError: Expecting value")
    elif case in ("config-not-json", "config-num-labels-a-string"):
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text("{" if case == "config-not-json" else json.dumps({**cfg, "num_labels": "2"}))
        why = "OSError" if case == "config-not-json" else "TypeError: 'str' object cannot be interpreted as an integer"
        model, match = str(folder), rf"^model: .*m: cannot read its config\.json \({why}"
    elif case == "vocab-without-unk":  # loads, then fails on every text: every cell would fail alike
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ("tokenizer.json",))
        (folder / "vocab.txt").write_text("")
        model, match = str(folder), r"^model: the tokenizer in .*m cannot tokenize the first text of .*reviews\.csv .*\[UNK\]"
    elif case == "data-dir-without-glue":  # ignored, it would still change the cell ids
        kw["data_dir"], match = str(tmp_path), r"^data_dir: applies to glue only"
    elif case == "blank-text":  # a field left out would be scored as [CLS] [SEP]
        write_csv(tmp_path / "e.csv", ["review", "stars"], [("good film", 1), ("  ", 0)])
        kw["eval_file"], match = str(tmp_path / "e.csv"), r"e\.csv: text_column 'review' \(line 3\) is empty"
    elif case == "regression-metric":
        kw["metric"], match = "spearman", "needs a regression head"
    elif case == "empty-file":
        (tmp_path / "e.csv").write_text("")
        kw["eval_file"], match = str(tmp_path / "e.csv"), "no data rows"
    elif case == "header-only":
        (tmp_path / "e.tsv").write_text("review\tstars\n")
        kw["eval_file"], match = str(tmp_path / "e.tsv"), "no data rows"
    elif case == "not-utf8":
        (tmp_path / "l.csv").write_bytes("review,stars\ncafé crème,1\n".encode("latin-1"))
        kw["eval_file"], match = str(tmp_path / "l.csv"), "not UTF-8"
    elif case == "extra-field":
        (tmp_path / "x.csv").write_text("review,stars\ngood film,1\nbad movie,0,extra\n")
        kw["eval_file"], match = str(tmp_path / "x.csv"), "line 3: 3 fields, the header has 2"
    elif case == "folder":
        kw["eval_file"], match = str(tmp_path), "is a folder, not a file"
    elif case == "hub-offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        model, match = "some-org/some-model", "not in the local transformers cache, and HF_HUB_OFFLINE is set"
    else:
        folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
        model, match = str(folder), "unsupported architecture 'gpt2'; supported: bert, roberta"
    with pytest.raises(ValueError, match=match):
        TextClassification(model=model, **kw)


@pytest.mark.parametrize("damage, match", [
    ("tokenizer.json", r"m: cannot read its tokenizer files \(tokenizer\.json"),
    ("config.json", r"m: cannot read its config\.json \(TypeError"),
])
def test_a_damaged_model_file_is_the_folders_fault_not_a_failed_construction(tmp_path, model_dirs, data_dir, damage,
                                                                             match, capsys):
    """The registry words an error that is not a ValueError as a plugin's bug ("failed to construct");
    a model folder's file that cannot be read is the config's, named with its folder."""
    from profiler.cli import main

    folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
    if damage == "tokenizer.json":
        (folder / damage).write_text("")
    else:
        (folder / damage).write_text(json.dumps({**json.loads((folder / damage).read_text()), "num_labels": "2"}))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[tasks]]\nname = "text-classification"\nmodel = "{folder}"\n'
                   f'eval_file = "{data_dir / "reviews.csv"}"\ntext_column = "review"\nlabel_column = "stars"\n'
                   '[[pruners]]\nname = "none"\n[[accelerators]]\nname = "torch-fp32"\n')
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "invalid config: tasks[0]: model: " in err and "failed to construct" not in err
    import re
    assert re.search(match, err), err
    assert not (tmp_path / "runs").exists()


def test_bad_task_fails_config_validation_and_writes_nothing(tmp_path, model_dirs):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[tasks]]\nname = "text-classification"\nmodel = "{model_dirs["bert"]}"\n'
                   f'eval_file = "{tmp_path / "missing.csv"}"\n[[pruners]]\nname = "none"\n'
                   '[[accelerators]]\nname = "torch-fp32"\n')
    from profiler.cli import main

    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("arch, seq_len, ok", [("bert", 160, True), ("bert", 161, False), ("roberta", 158, True),
                                               ("roberta", 159, False)])
def test_seq_len_beyond_the_models_positions_fails_before_any_work(tmp_path, model_dirs, data_dir, arch, seq_len, ok,
                                                                   capsys):
    """160 position embeddings: BERT takes 160 tokens, RoBERTa 158 (its positions start after the padding index)."""
    from profiler.config import parse_config
    from profiler.errors import ConfigError
    from profiler.runner import preflight

    cfg = parse_config({"meter": {"name": "estimate"}, "run": {"name": "t", "output_dir": str(tmp_path / "runs")},
                        "tasks": [{"name": "text-classification", "model": str(model_dirs[arch]),
                                   "eval_file": str(data_dir / "reviews.csv"), "text_column": "review",
                                   "label_column": "stars"}],
                        "pruners": [{"name": "none"}], "accelerators": [{"name": "torch-fp32"}],
                        "matrix": {"seq_len": [16, seq_len]}})
    if ok:
        preflight(cfg, tmp_path / "cache")
    else:
        with pytest.raises(ConfigError, match=rf"matrix.seq_len: {seq_len} is longer than tasks\[0\].*use seq_len <= "):
            preflight(cfg, tmp_path / "cache")


def test_a_max_length_beyond_the_models_positions_fails_before_any_work(tmp_path, model_dirs, data_dir):
    """max_length cuts every text the task tokenizes: longer than the 160 position embeddings, each
    cell would fail inside torch."""
    from profiler.config import parse_config
    from profiler.errors import ConfigError
    from profiler.runner import preflight

    def cfg(max_length):
        return parse_config({"meter": {"name": "estimate"}, "run": {"name": "t", "output_dir": str(tmp_path / "runs")},
                             "tasks": [{"name": "text-classification", "model": str(model_dirs["bert"]),
                                        "eval_file": str(data_dir / "reviews.csv"), "text_column": "review",
                                        "label_column": "stars", "max_length": max_length}],
                             "pruners": [{"name": "none"}], "accelerators": [{"name": "torch-fp32"}],
                             "matrix": {"seq_len": [16]}})

    preflight(cfg(160), tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"tasks\[0\].max_length: 161 is longer than its model takes \(160 positions\)"):
        preflight(cfg(161), tmp_path / "cache")


def test_a_model_saved_in_bf16_is_profiled_in_fp32(tmp_path, model_dirs, data_dir):
    """The torch-fp32 baseline divides every factor: a folder saved in bf16 loads as float32 (exact),
    with or without its head."""
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "bf16"
    AutoModelForSequenceClassification.from_pretrained(model_dirs["bert"]).to(torch.bfloat16).save_pretrained(folder)
    for f in model_dirs["bert"].iterdir():  # the tokenizer's files
        if not (folder / f.name).exists():
            (folder / f.name).write_bytes(f.read_bytes())
    task = TextClassification(model=str(folder), eval_file=str(data_dir / "reviews.csv"), text_column="review",
                              label_column="stars")
    model = task.base_model()
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("pruner, match", [
    ('name = "gmp"\nsparsity = 0.5\nsteps = 4', r"pruners\[0\] \(gmp.*\) trains on the task's training data and tasks\[0\]"),
    ('name = "magnitude"\nsparsity = 0.5\nstructure = "1x3"', r"pruners\[0\]: structure '1x3': layer .* is not a multiple"),
])
def test_a_pruner_the_task_cannot_feed_fails_before_any_work(tmp_path, model_dirs, data_dir, pruner, match, capsys):
    """No train_file for a pruner that trains; a block that does not tile the model's weights: exit 2, nothing written."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[meter]\nname = "estimate"\n[[tasks]]\nname = "text-classification"\nmodel = "{model_dirs["bert"]}"\n'
                   f'eval_file = "{data_dir / "reviews.csv"}"\ntext_column = "review"\nlabel_column = "stars"\n'
                   f'[[pruners]]\n{pruner}\n[[accelerators]]\nname = "torch-fp32"\n')
    from profiler.cli import main

    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()
    import re
    assert re.search(match, capsys.readouterr().err)


def test_unsupported_architecture_is_rejected_by_the_role_map():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, bos_token_id=0, eos_token_id=0))
    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'; supported: bert, roberta, xlm-roberta, electra, distilbert"):
        MagnitudePruner(sparsity=0.5).prune(model)


def test_glue_presets_are_named_tasks_with_their_metrics():
    from profiler.plugins import TASKS

    assert {"sst2", "mrpc", "stsb", "text-classification"} <= set(TASKS.names())
    assert TASKS.params("mrpc") == TASKS.params("sst2")  # one preset signature: fine-tuning knobs + data_dir


def test_cli_run_on_own_model_and_file_writes_metric_rows_and_report(tmp_path, model_dirs, data_dir):
    from profiler.cli import main

    cfg = tmp_path / "mine.toml"
    cfg.write_text(
        '[run]\nname = "mine"\n[measure]\nwarmup_iters = 1\nmin_iters = 2\nmin_seconds = 0.01\nmax_seconds = 1.0\n'
        'idle_seconds = 0\nschedule = "sequential"\n[meter]\nname = "estimate"\n'
        f'[[tasks]]\nname = "text-classification"\nmodel = "{model_dirs["electra"]}"\n'
        f'eval_file = "{data_dir / "reviews.csv"}"\ntext_column = "review"\ntext_pair_column = "other"\n'
        'label_column = "stars"\nmetric = "f1"\n'
        '[[pruners]]\nname = "none"\n[[pruners]]\nname = "magnitude"\nsparsity = 0.9\n'
        '[[accelerators]]\nname = "torch-fp32"\n[[accelerators]]\nname = "sparse-cpu"\ncalibrate = false\n'
        '[matrix]\nbatch_size = [2]\nseq_len = [16]\n')
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert all(r["metric_name"] == "f1" and r["metric_f1"] == r["accuracy"] for r in rows)
    assert (run_dir / "report.html").is_file()


def test_resumed_cells_reuse_every_metric_of_their_model(tmp_path, model_dirs, data_dir):
    import sparsebench
    from profiler.cli import main

    run_dir = tmp_path / "run"
    fast = {"warmup_iters": 1, "min_iters": 2, "min_seconds": 0.01, "max_seconds": 1.0, "idle_seconds": 0,
            "schedule": "sequential"}
    df = sparsebench.profile(str(model_dirs["bert"]), None, [{"text": a, "label": y} for a, _, y in sentences(16)],
                             metric="f1", batch_size=[1, 2], seq_len=[8], measure=fast, meter={"name": "estimate"},
                             out=run_dir, cache_dir=tmp_path / "cache")
    assert df["model_id"].nunique() == 1 and df["metric_accuracy"].notna().all()
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    (run_dir / "results.jsonl").write_text(lines[0] + "\n")  # as if killed after the first cell
    assert main(["run", "--resume", str(run_dir), "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[1]["metric_accuracy"] == rows[0]["metric_accuracy"]
    assert rows[1]["metric_f1"] == rows[0]["metric_f1"] == rows[1]["accuracy"]


def test_data_errors_name_the_key_and_what_a_label_may_be(tmp_path, model_dirs, data_dir):
    with pytest.raises(ValueError, match=r"^eval_file: data file .*nope.csv does not exist"):
        TextClassification(model=str(model_dirs["bert"]), eval_file=str(tmp_path / "nope.csv"))
    write_csv(tmp_path / "t.csv", ["text", "label"], [("hated it .", "hated it .")])
    # the config's generic names are names too: what a pipeline answers
    with pytest.raises(ValueError, match=r"is not a class index or one of \['LABEL_0', 'LABEL_1'\]"):
        TextClassification(model=str(model_dirs["bert"]), eval_file=str(tmp_path / "t.csv"))
    write_csv(tmp_path / "n.csv", ["text", "label"], [("hated it .", "LABEL_0"), ("loved it .", "LABEL_1")])
    task = TextClassification(model=str(model_dirs["bert"]), eval_file=str(tmp_path / "n.csv"))
    assert [e.label for e in task.eval_examples()] == [0, 1]


@pytest.mark.parametrize("value, holds", [
    (None, "null"), (["good", "film"], r"a list \['good', 'film'\]"), ({"en": "good"}, r"an object \{'en': 'good'\}"),
    (7, "a number 7"), (True, "a boolean True"), (["x" * 80], r"a list \['xxx.*\.\.\."),
])
def test_a_text_value_that_is_not_a_string_names_the_file_row_and_column(tmp_path, model_dirs, value, holds):
    """null, a list or an object is not scored as its str() ("None", "['good', 'film']")."""
    rows = [{"review": "fine", "other": "ok", "stars": 1}, {"review": value, "other": "ok", "stars": 0}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(ValueError, match=rf"^.*d\.jsonl: text_column 'review' \(line 2\) holds {holds}, not text; "
                                         "every value of a text column must be a string$"):
        TextClassification(model=str(model_dirs["bert"]), eval_file=str(path), text_column="review",
                           label_column="stars")
    # the second sentence of a pair, in the training file
    eval_file = write_jsonl(tmp_path / "e.jsonl", [{"review": "fine", "other": "ok", "stars": 1}])
    train_file = write_jsonl(tmp_path / "t.jsonl", [{"review": "fine", "other": "ok", "stars": 1},
                                                    {"review": "fine", "other": value, "stars": 0}])
    with pytest.raises(ValueError, match=rf"t\.jsonl: text_pair_column 'other' \(line 2\) holds {holds}, not text"):
        TextClassification(model=str(model_dirs["bert"]), eval_file=str(eval_file), train_file=str(train_file),
                           text_column="review", text_pair_column="other", label_column="stars")


def test_jsonl_string_text_is_kept_stripped(tmp_path, model_dirs):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "  good film ", "label": 1}, {"text": "7", "label": 0}])
    task = TextClassification(model=str(model_dirs["bert"]), eval_file=str(path))
    assert task._raw["eval"][0] == ["good film", "7"]


def test_model_fingerprint_follows_content_not_file_times(tmp_path, model_dirs, data_dir):
    """A touched model folder keeps its task key (a resume or a cache entry survives it), a copy
    (new inodes and times, as on another machine) keeps its file digests; a changed weight byte
    gives a new key."""
    import os
    import shutil

    from profiler.identity import stable_hash

    def fingerprint(folder: Path) -> dict:
        return TextClassification(model=str(folder), eval_file=str(data_dir / "reviews.csv"),
                                  text_column="review", label_column="stars").fingerprint()

    folder = shutil.copytree(model_dirs["bert"], tmp_path / "model")
    before = fingerprint(folder)
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(1, 1))  # touched: size and content unchanged
    assert stable_hash(fingerprint(folder)) == stable_hash(before)
    copied = shutil.copytree(folder, tmp_path / "copy", copy_function=shutil.copy)
    assert fingerprint(copied)["model_files"] == before["model_files"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(1, 1))  # the same times as before: only the content tells
    assert stable_hash(fingerprint(folder)) != stable_hash(before)


def test_an_unreadable_model_file_is_a_config_error_naming_it(tmp_path, model_dirs, data_dir, monkeypatch):
    from profiler.config import ConfigError, check_matrix_fits_tasks, parse_config
    from profiler.tasks import modelsource

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    cfg = parse_config({"tasks": [{"name": "text-classification", "model": str(model_dirs["bert"]),
                                   "eval_file": str(data_dir / "reviews.csv"), "text_column": "review",
                                   "label_column": "stars"}],
                        "pruners": [{"name": "none"}], "accelerators": [{"name": "torch-fp32"}]})
    monkeypatch.setattr(modelsource, "file_digest", denied)
    with pytest.raises(ConfigError, match=r"tasks\[0\] .*: model: .*config.json cannot be read: Permission denied"):
        check_matrix_fits_tasks(cfg)


def test_the_fine_tune_cache_key_leaves_out_what_only_evaluation_reads(tmp_path, model_dirs, data_dir):
    """Another eval file or metric: the same fine-tuned model (no second fine-tune); another
    training file: another model. The run's own task key still tells all three apart."""
    from profiler.identity import stable_hash

    other = tmp_path / "eval.csv"
    other.write_text((data_dir / "reviews.csv").read_text() + "one more review,x,1\n")

    def task(**kw) -> TextClassification:
        base = {"model": str(model_dirs["bert"]), "eval_file": str(data_dir / "reviews.csv"),
                "train_file": str(data_dir / "reviews.csv"), "text_column": "review", "label_column": "stars",
                "finetune_steps": 2}
        return TextClassification(**{**base, **kw})

    a, b, c = task(), task(eval_file=str(other), metric="f1"), task(train_file=str(other))
    assert a.model_cache_path(tmp_path) == b.model_cache_path(tmp_path) != c.model_cache_path(tmp_path)
    assert len({stable_hash(t.fingerprint()) for t in (a, b, c)}) == 3
    # the pruned models are keyed the same way: the second task finds the first one's in the cache
    from profiler.config import PluginSpec, parse_config
    from profiler.runner import Runner
    from tests.conftest import tiny_config

    runner = Runner(parse_config(tiny_config()), tmp_path / "run", cache_dir=tmp_path / "cache")
    spec = PluginSpec("pruner", "magnitude", {"sparsity": 0.5}, "pruners[0]")
    for t in (a, b):
        runner.pruned(t, t.base_model(), spec)
    assert len(list((tmp_path / "cache" / "pruned").iterdir())) == 1


def test_an_encoder_tensor_the_weights_lack_fails_the_load_where_no_header_told_it(tmp_path, model_dirs, data_dir,
                                                                                   monkeypatch):
    """``.bin`` weights have no header to check at config time: the new-head load itself refuses
    an encoder left at random (here the safetensors header check is switched off to stand in)."""
    from profiler.tasks import modelsource

    folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3, "architectures": ["BertModel"]}))
    monkeypatch.setattr(modelsource, "saved_tensor_shapes", lambda folder: None)
    task = TextClassification(model=str(folder), eval_file=str(data_dir / "reviews.csv"), train_file=str(data_dir / "reviews.csv"),
                              text_column="review", label_column="stars", finetune_steps=1)
    with pytest.raises(RuntimeError, match=r"its weights lack \d+ tensor\(s\) of the encoder .* e.g. bert.encoder.layer.2."):
        task.base_model()
    cfg_ok = {**cfg, "architectures": ["BertModel"]}  # the new head (and pooler) alone may be missing
    (folder / "config.json").write_text(json.dumps(cfg_ok))
    ok = TextClassification(model=str(folder), eval_file=str(data_dir / "reviews.csv"), train_file=str(data_dir / "reviews.csv"),
                            text_column="review", label_column="stars", finetune_steps=1)
    assert ok.base_model().classifier.out_features == 2


@pytest.mark.parametrize("head", [True, False])
def test_a_checkpoint_with_legacy_layernorm_names_loads(tmp_path, model_dirs, data_dir, head):
    """Checkpoints converted from TensorFlow BERT name LayerNorm tensors gamma / beta; transformers
    renames them on load, so the config-time weight check must not call them missing."""
    from safetensors.torch import load_file, save_file

    folder = _broken_folder(model_dirs["bert"], tmp_path / "m", ())
    w = load_file(folder / "model.safetensors")
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in w.items()}
    assert sum(".gamma" in k for k in legacy) >= 5
    save_file(legacy, folder / "model.safetensors", metadata={"format": "pt"})
    kw = {"eval_file": str(data_dir / "reviews.csv"), "text_column": "review", "label_column": "stars"}
    if not head:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
        kw.update(train_file=kw["eval_file"], finetune_steps=1)
    task = TextClassification(model=str(folder), **kw)
    model = task.base_model()
    ln = model.bert.embeddings.LayerNorm.weight
    assert torch.equal(ln, w["bert.embeddings.LayerNorm.weight"])  # loaded, not started at ones
