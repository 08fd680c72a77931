"""Edges of the user's data files and the API's rows: quoted line breaks, raw U+2028 in JSONL,
duplicated columns, leading blank lines, blank texts, labels that are NaN, inf or booleans, byte-order
marks and ``~`` in their paths. Each is read as Python's csv / json modules read it, or refused with
the file, the line or row, and the column."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import sparsebench
from profiler.errors import ConfigError
from profiler.tasks.textdata import parse_labels, read_rows, row_lines
from sparsebench.api import jsonl_of
from tests.tiny_family import save_tiny_model

#: characters str.splitlines() breaks at but csv (outside \r, \n) and JSON strings keep
LINE_BREAKS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))  # bytes: no newline translation on any platform
    return path


# ---- CSV / TSV ------------------------------------------------------------------------------------
def test_a_quoted_csv_field_keeps_its_line_breaks_as_pythons_csv_reads_them(tmp_path):
    texts = ["good\nmovie", "good\r\nmovie", "bad\rplot", *(f"a{c}b" for c in LINE_BREAKS)]
    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *((t, i % 2) for i, t in enumerate(texts))])
    with open(path, newline="", encoding="utf-8") as f:
        expected = list(csv.DictReader(f))
    rows = read_rows(path)
    assert rows == expected
    assert [r["text"] for r in rows] == texts  # the words stay apart: not 'goodmovie'


def test_a_tsv_field_holding_a_unicode_line_separator_stays_one_field(tmp_path):
    # TSV has quoting off: a U+2028 in a sentence is part of it, not the end of the row
    sentence = "".join(f"a{c}b" for c in LINE_BREAKS)
    rows = read_rows(_write(tmp_path / "d.tsv", f"sentence\tlabel\n{sentence}\t1\n"))
    assert rows == [{"sentence": sentence, "label": "1"}]


def test_a_row_with_a_wrong_field_count_names_the_line_it_starts_on(tmp_path):
    path = _write(tmp_path / "d.csv", 'text,label\n"good\nmovie",1\n"so\nso",1,extra\n')
    with pytest.raises(ValueError, match=r"d\.csv line 4: 3 fields, the header has 2 \(text, label\); quote fields"):
        read_rows(path)


def test_blank_lines_before_the_header_are_skipped_as_between_rows(tmp_path):
    assert read_rows(_write(tmp_path / "d.csv", "\n\r\ntext,label\ngood movie,1\n\nbad plot,0\n")) == [
        {"text": "good movie", "label": "1"}, {"text": "bad plot", "label": "0"}]
    assert read_rows(_write(tmp_path / "d.tsv", "\ntext\tlabel\ngood movie\t1\n")) == [
        {"text": "good movie", "label": "1"}]
    # the skipped lines still count in the line numbers
    with pytest.raises(ValueError, match=r"d\.csv line 3: 3 fields, the header has 2 \(text, label\)"):
        read_rows(_write(tmp_path / "d.csv", "\ntext,label\ngood movie,1,x\n"))


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.jsonl"])
def test_whitespace_only_lines_are_skipped_in_every_format(tmp_path, name):
    """Spaces or tabs alone on a line are a blank line (the docstring's promise, JSONL's behaviour);
    CSV / TSV used to read them as a one-field row: "line 4: 1 field, the header has 2"."""
    sep = {"d.csv": ",", "d.tsv": "\t"}.get(name)
    rows = [{"text": "good movie", "label": "1"}, {"text": "bad plot", "label": "0"}]
    lines = ([sep.join(rows[0])] + [sep.join(r.values()) for r in rows] if sep
             else [json.dumps(r) for r in rows])
    text = "  \n" + "\n \t \n".join(lines) + "\n\t\n   \r\n"
    got = read_rows(_write(tmp_path / name, text))
    assert got == rows and [r.line for r in got] == ([4, 6] if sep else [2, 4])  # skipped lines still count
    if sep == ",":  # a quoted field of spaces is a value, not a blank line
        assert read_rows(_write(tmp_path / name, 'text\n"  "\n'))[0]["text"] == "  "


def test_a_data_file_that_is_a_device_is_not_called_missing(tmp_path):
    with pytest.raises(ValueError, match=r"^data file /dev/null is not a regular file \(a device"):
        read_rows("/dev/null")
    with pytest.raises(ValueError, match=r"d\.csv does not exist$"):
        read_rows(tmp_path / "d.csv")


@pytest.mark.parametrize("name, text", [("d.csv", "text,label,label\ngood movie,1,0\n"),
                                        ("d.tsv", "\ntext\tlabel\tlabel\ngood movie\t1\t0\n")])
def test_a_header_that_names_a_column_twice_is_refused(tmp_path, name, text):
    line = 2 if text.startswith("\n") else 1
    with pytest.raises(ValueError, match=rf"{name} line {line}: the header names column 'label' more than once "
                                         r"\(text, label, label\)"):
        read_rows(_write(tmp_path / name, text))


# ---- JSONL ----------------------------------------------------------------------------------------
def test_a_jsonl_string_may_hold_raw_unicode_line_breaks(tmp_path):
    raw = ["\u2028", "\u2029", "\x85"]  # the others of LINE_BREAKS are control characters: JSON escapes them
    texts = [f"good{c}movie" for c in raw]
    # ensure_ascii=False writes them raw, as most JSON writers other than Python's do
    lines = [json.dumps({"text": t, "label": i % 2}, ensure_ascii=False) for i, t in enumerate(texts)]
    assert all(c in "".join(lines) for c in raw)
    rows = read_rows(_write(tmp_path / "d.jsonl", "\r\n".join(lines) + "\r\n"))
    assert [r["text"] for r in rows] == texts


def test_a_jsonl_line_error_counts_lines_at_newlines_only(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "a\u2028b", "label": 1}\n\n{"text": "c", "label": \n')
    with pytest.raises(ValueError, match=r"d\.jsonl line 3: not JSON"):
        read_rows(path)


def test_a_jsonl_object_that_repeats_a_key_is_refused(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0, "label": 1}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl line 2: key 'label' appears more than once in one object"):
        read_rows(path)


# ---- labels -------------------------------------------------------------------------------------
def test_a_bad_value_in_a_file_names_its_line_not_its_row(tmp_path):
    """The header, a blank line and a quoted line break move the record off its row number: the
    error names the line the record starts on, where an editor shows it."""
    path = _write(tmp_path / "d.csv", 'text,label\n"a film in\ntwo lines",1\n\nfine,0\nbad plot,maybe\n')
    rows = read_rows(path)
    assert [r.line for r in rows] == [2, 5, 6]
    with pytest.raises(ValueError, match=r"^d\.csv: label 'maybe' \(line 6\) is not a class index"):
        parse_labels([r["label"] for r in rows], False, {}, "d.csv", row_lines(rows))
    with pytest.raises(ValueError, match=r"^d\.csv: label 'maybe' \(row 3\) is not"):  # values not from a file
        parse_labels([r["label"] for r in rows], False, {}, "d.csv")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", "1e999", float("nan"), float("inf")])
def test_a_regression_label_must_be_a_finite_number(value):
    with pytest.raises(ValueError, match=rf"^d\.csv: label {re.escape(repr(value))} \(row 2\) is not a finite number$"):
        parse_labels(["0.5", value], True, {}, "d.csv")


@pytest.mark.parametrize("value", ["inf", "-inf", "1e999", float("inf"), "nan"])
def test_an_infinite_class_label_is_not_a_class_index(value):
    # int(float('inf')) is an OverflowError: it must not escape as a bare "failed to construct"
    with pytest.raises(ValueError, match=r"^d\.csv: label .* \(row 2\) is not a class index \(0, 1, \.\.\.; the "
                                         r"model's config names no labels\)$"):
        parse_labels(["1", value], False, {}, "d.csv")


@pytest.mark.parametrize("regression, kind", [(False, r"a class index or one of \['neg', 'pos'\]"),
                                              (True, "a finite number")])
def test_a_boolean_label_is_refused_not_read_as_1_or_0(tmp_path, regression, kind):
    path = _write(tmp_path / "d.jsonl", '{"text": "good movie", "label": 1}\n{"text": "bad plot", "label": false}\n')
    values = [r["label"] for r in read_rows(path)]
    with pytest.raises(ValueError, match=rf"d\.jsonl: label False \(row 2\) is not {kind}$"):
        parse_labels(values, regression, {"neg": 0, "pos": 1}, str(path))


def test_finite_labels_still_parse():
    assert parse_labels(["0.5", 2, "-1e3", 0.25], True, {}, "d.csv") == [0.5, 2.0, -1000.0, 0.25]
    assert parse_labels(["1", 0, "2.0", " pos "], False, {"pos": 1}, "d.csv") == [1, 0, 2, 1]


# ---- the Python API's rows ------------------------------------------------------------------------
def test_api_rows_keep_numpy_scalars_and_refuse_bytes_naming_the_column_and_row():
    assert jsonl_of([{"text": np.str_("good"), "label": np.int64(1), "score": np.float32(0.5)}], "eval_data") == \
        '{"text": "good", "label": 1, "score": 0.5}\n'
    for rows, where in (([{"text": "good", "label": 1}, {"text": b"bad plot", "label": 0}], "column 'text'"),
                        ([{"text": "good", "label": 1}, {"text": ["bad", b"plot"], "label": 0}],
                         "a value nested in a column")):
        with pytest.raises(ConfigError, match=rf"^eval_data: {where} \(row 2\) holds a bytes b'.*', not text, a "
                                              "number, a boolean or null"):
            jsonl_of(rows, "eval_data")


def test_profile_refuses_bytes_text_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"^train_data: column 'text' \(row 1\) holds a bytes b'good movie'"):
        sparsebench.profile(str(tmp_path / "no-model-needed"), None, [{"text": "fine", "label": 1}],
                            train_data=[{"text": b"good movie", "label": 1}], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---- through the CLI: a config error, exit 2, nothing run ----------------------------------------
@pytest.mark.parametrize("num_labels, name, text, match", [
    (1, "d.csv", "text,label\ngood movie,0.5\nbad plot,nan\n", r"d\.csv: label 'nan' \(line 3\) is not a finite number"),
    (2, "d.csv", "text,label\ngood movie,inf\nbad plot,0\n", r"d\.csv: label 'inf' \(line 2\) is not a class index"),
    (2, "d.jsonl", '{"text": "good movie", "label": true}\n', r"d\.jsonl: label True \(line 1\) is not a class index"),
    (2, "d.csv", "text,label,label\ngood movie,1,0\n",
     r"d\.csv line 1: the header names column 'label' more than once"),
    # a text left out would be scored as an example of special tokens only
    (2, "d.csv", "text,label\ngood movie,1\n,0\n", r"d\.csv: text_column 'text' \(line 3\) is empty"),
    (2, "d.tsv", "text\tlabel\ngood movie\t1\n \t0\n", r"d\.tsv: text_column 'text' \(line 3\) is empty"),
    (2, "d.jsonl", '{"text": "good movie", "label": 1}\n{"text": " \\t", "label": 0}\n',
     r"d\.jsonl: text_column 'text' \(line 2\) is empty"),
])
def test_bad_labels_and_columns_are_a_config_error_exit_2(tmp_path, capsys, num_labels, name, text, match):
    from profiler.cli import main

    model = save_tiny_model(tmp_path / "m", "bert", num_labels=num_labels)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[tasks]]\nname = "text-classification"\nmodel = "{model}"\n'
                   f'eval_file = "{_write(tmp_path / name, text)}"\n'
                   + ('metric = "pearson"\n' if num_labels == 1 else "")
                   + '[[pruners]]\nname = "none"\n[[accelerators]]\nname = "torch-fp32"\n')
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "invalid config" in err and "failed to construct" not in err
    assert re.search(match, err), err
    assert not (tmp_path / "runs").exists()


def test_an_unclosed_quote_is_named_as_such(tmp_path):
    """The csv module swallows the rest of the file into the quoted field: the record is then one
    field long and spans lines, which the message says."""
    from profiler.tasks.textdata import read_rows

    path = tmp_path / "open.csv"
    path.write_text('text,label\n"good\nmovie,1\nbad plot,0\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: 1 field, the header has 2 \(text, label\); a quote opened on "
                                         r"line 2 may not be closed \(the record runs to line 4\)"):
        read_rows(path)


def test_a_text_source_keeps_a_line_separator_inside_its_line(tmp_path):
    """Only line ends split a .txt text source (as a data file's rows): U+2028 stays in the sentence."""
    from profiler.tasks.textdata import unlabeled_texts

    path = tmp_path / "source.txt"
    path.write_text("a good\u2028movie\r\nbad plot\n\nbad plot\n", encoding="utf-8")
    assert unlabeled_texts(str(path)) == ["a good\u2028movie", "bad plot"]


def test_the_packaged_glue_sets_hold_no_blank_text():
    """Blank texts are refused; the packaged train/dev splits (the quickstart's data) must still load."""
    from profiler.tasks.textdata import GLUE, check_columns, packaged_glue_dir, parse_texts

    for name, preset in GLUE.items():
        for split in ("train", "dev"):
            path = packaged_glue_dir(name) / f"{split}.tsv"
            rows = read_rows(path)
            for key, column in (("text_column", preset.text_column), ("text_pair_column", preset.text_pair_column)):
                if column:
                    check_columns(rows, [column], str(path))
                    assert all(parse_texts([r[column] for r in rows], key, column, str(path), row_lines(rows)))


def test_a_text_source_drops_its_byte_order_mark(tmp_path):
    """As a data file's: str.strip() keeps a U+FEFF, which would start the first distillation text."""
    from profiler.tasks.textdata import unlabeled_pairs, unlabeled_texts

    path = tmp_path / "source.txt"
    path.write_bytes(b"\xef\xbb\xbfgood movie\r\nbad plot\r\n")
    assert unlabeled_texts(str(path)) == ["good movie", "bad plot"]
    path.write_bytes(b"\xef\xbb\xbfgood movie\ta fine film\n")
    assert unlabeled_pairs(str(path)) == [("good movie", "a fine film")]


def test_a_tilde_is_expanded_in_every_path_parameter(tmp_path, monkeypatch):
    """``~`` names the home folder in each path parameter, not only in ``model``; the stored value
    is the full path (another ``$HOME`` would read another folder), whether or not it exists."""
    from profiler.config import PATH_PARAMS, absolute_paths, load_config

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    save_tiny_model(home / "m", "bert")
    _write(home / "d.csv", "text,label\ngood movie,1\nbad plot,0\n")
    _write(home / "extra.txt", "fine\n")
    raw = {"tasks": [{"name": "text-classification", "model": "~/m", "eval_file": "~/d.csv",
                      "train_file": ["~/d.csv", "~/gone.csv"], "data_dir": "~/glue"}],
           "pruners": [{"name": "gmp", "distill_text": ["sst2", "~/extra.txt"]}]}
    out = absolute_paths(raw)
    assert out["tasks"][0] == {"name": "text-classification", "model": str(home / "m"), "eval_file": str(home / "d.csv"),
                               "train_file": [str(home / "d.csv"), str(home / "gone.csv")],
                               "data_dir": str(home / "glue")}
    assert out["pruners"][0]["distill_text"] == ["sst2", str(home / "extra.txt")]
    assert set(PATH_PARAMS) <= set(out["tasks"][0]) | set(out["pruners"][0])  # every path parameter was tried
    # without a ~ nothing changes: an absolute path, a hub id, a name with a ~ inside it
    plain = {"tasks": [{"name": "text-classification", "model": "org/m~1", "eval_file": str(home / "d.csv"),
                        "train_file": "a~/b.csv"}]}
    assert absolute_paths(plain) == plain
    config = _write(tmp_path / "c.toml", '[[tasks]]\nname = "text-classification"\nmodel = "~/m"\n'
                    'eval_file = "~/d.csv"\n[[pruners]]\nname = "none"\n[[accelerators]]\nname = "torch-fp32"\n')
    params = load_config(config).tasks[0].params  # used to fail: "data file ~/d.csv does not exist"
    assert (params["model"], params["eval_file"]) == (str(home / "m"), str(home / "d.csv"))
