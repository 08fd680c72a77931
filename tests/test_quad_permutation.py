"""scripts/quad_permutation.py: quad counts, the greedy column order, and one model's record."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import quad_permutation as qp  # noqa: E402


def test_stored_quads_counts_non_empty_quads_with_padding():
    nz = np.zeros((2, 6), dtype=bool)  # 6 columns: quads [0:4], [4:6]+padding
    nz[0, [0, 3]] = True   # one quad
    nz[0, 5] = True        # the padded quad
    nz[1, 2] = True
    assert qp.stored_quads(nz) == 3


def test_greedy_order_is_a_permutation_that_regroups_shuffled_quads():
    rng = np.random.default_rng(1)
    # 16 column groups of 4 identical columns: packed as grouped, every stored quad is full
    groups = rng.random((64, 16)) < 0.2
    grouped = np.repeat(groups, 4, axis=1)
    shuffled = grouped[:, rng.permutation(64)]
    order = qp.greedy_order(shuffled)
    assert sorted(order.tolist()) == list(range(64))
    assert qp.stored_quads(shuffled[:, order]) == qp.stored_quads(grouped) < qp.stored_quads(shuffled)


def test_analyse_one_saved_model(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, vocab_size=50))
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            w = layer.output.dense.weight
            w.mul_(torch.rand_like(w) < 0.1)  # ~90 % unstructured
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    out = tmp_path / "q.json"
    assert qp.main([str(tmp_path / "m"), "--out", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert rec["model"] == "m" and rec["ffn_out_matrices"] == 2
    assert rec["ffn_out_quads_row_lower_bound"] <= rec["ffn_out_quads_greedy"] <= rec["ffn_out_quads_as_pruned"]
    assert 0 < rec["quad_fill_as_pruned"] <= rec["quad_fill_greedy"] <= 1
    assert 0 <= rec["encoder_quads_saved_share"] < 1


def test_a_folder_without_a_bert_encoder_is_skipped(tmp_path, capsys):
    from safetensors.numpy import save_file

    (tmp_path / "x").mkdir()
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(tmp_path / "x" / "model.safetensors"))
    assert qp.main([str(tmp_path / "x"), str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "no BERT encoder Linear weights" in err and "No such file" in err
