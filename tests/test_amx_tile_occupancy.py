"""scripts/amx_tile_occupancy.py: quad and tile counts, the greedy row grouping, the cycle bounds."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import amx_tile_occupancy as at  # noqa: E402


def test_quad_mask_pads_columns_to_quads():
    w = np.zeros((2, 6), dtype=np.float32)  # quads [0:4] and [4:6] + padding
    w[0, 5] = 1.0
    w[1, 0] = -2.0
    assert at.quad_mask(w).tolist() == [[False, True], [True, False]]


def test_aligned_tiles_skip_only_all_zero_tiles():
    quads = np.zeros((40, 40), dtype=bool)  # 3 row groups (the last padded) × 3 quad groups (the last padded)
    quads[0, 0] = True      # tile (0, 0)
    quads[15, 15] = True    # the same tile
    quads[16, 39] = True    # tile (1, 2), in the padding's tile column
    quads[39, 16] = True    # tile (2, 1), in the padded row group
    assert at.aligned_tiles(quads) == 3


def test_gathered_tiles_pack_the_union_of_a_groups_quads():
    quads = np.zeros((16, 64), dtype=bool)
    quads[np.arange(16), np.arange(16) * 4] = True  # 16 rows, 16 distinct quads: one full gathered tile
    assert at.gathered_tiles(quads, np.arange(16)) == 1
    assert at.aligned_tiles(quads) == 4              # the same quads touch all 4 fixed tiles
    quads[0, 1] = True                               # a 17th distinct quad: a second tile
    assert at.gathered_tiles(quads, np.arange(16)) == 2


def test_greedy_row_order_regroups_rows_of_shared_support():
    rng = np.random.default_rng(0)
    supports = rng.random((4, 96)) < 0.1             # 4 patterns, 16 rows each, shuffled
    grouped = np.repeat(supports, 16, axis=0)
    shuffled = grouped[rng.permutation(64)]
    order = at.greedy_row_order(shuffled)
    assert sorted(order.tolist()) == list(range(64))
    best = at.gathered_tiles(grouped, np.arange(64))
    assert at.gathered_tiles(shuffled, order) == best < at.gathered_tiles(shuffled, np.arange(64))


def test_16x4_blocks_fill_gathered_tiles_and_set_the_bounds():
    rng = np.random.default_rng(0)
    keep = rng.random((4, 32)) < 0.25                # 64 × 128 weight in 16 × 4 blocks
    w = np.repeat(np.repeat(keep, 16, axis=0), 4, axis=1).astype(np.float32)
    c = at.count_matrix(w)
    assert c["quads"] == 16 * int(keep.sum())
    assert c["dense_tiles"] == 4 * 2
    assert c["gathered_tiles"] == sum(-(-int(k.sum()) // 16) for k in keep)
    b = at.bounds(c, vnni_per_cycle=2.0)
    cyc = b["cycles_per_16_tokens"]
    assert cyc["amx_dense"] == 16 * 8 and cyc["vnni_quads"] == c["quads"] / 2
    assert b["vs_dense_amx"]["amx_gathered"] == pytest.approx(8 / c["gathered_tiles"])
    assert b["vs_dense_amx"]["vnni_quads"] == pytest.approx(128 / (c["quads"] / 2))


def test_analyse_one_saved_model_and_the_json(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, vocab_size=50))
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            w = layer.output.dense.weight
            w.mul_(torch.rand_like(w) < 0.1)  # ~90 % unstructured in one matrix of six
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    out = tmp_path / "t.json"
    assert at.main([str(tmp_path / "m"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["assumptions"]["vnni_per_cycle"] == 2.0
    (rec,) = doc["models"]
    assert rec["model"] == "m" and len(rec["matrices"]) == 12
    enc = rec["encoder"]
    assert enc["gathered_tiles_greedy_rows"] <= enc["dense_tiles"] and enc["gathered_tiles"] <= enc["dense_tiles"]
    assert 0 < rec["quad_fill_aligned"] <= 1 and 0 < rec["quad_fill_gathered"] <= 1
    # a non-zero in every fixed tile (dense matrices; 90 % unstructured leaves ~34 % of quads): dense AMX's work
    assert enc["aligned_tiles"] == enc["dense_tiles"]
    assert enc["vs_dense_amx"]["amx_aligned"] == pytest.approx(1.0)


def test_bad_folders_are_skipped_and_a_bad_rate_refused(tmp_path, capsys):
    from safetensors.numpy import save_file

    (tmp_path / "x").mkdir()
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(tmp_path / "x" / "model.safetensors"))
    assert at.main([str(tmp_path / "x"), str(tmp_path / "missing"), "--no-greedy"]) == 1
    err = capsys.readouterr().err
    assert "no BERT encoder Linear weights" in err and "missing" in err
    with pytest.raises(SystemExit) as e:
        at.main([str(tmp_path / "x"), "--vnni-per-cycle", "0"])
    assert e.value.code == 2
