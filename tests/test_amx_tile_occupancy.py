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
    assert c["gathered_tiles_greedy_rows"] == c["gathered_tiles"]   # the blocks are the best grouping
    assert c["aligned_tiles"] == int(keep.reshape(4, 2, 16).any(-1).sum())
    b = at.bounds(c, vnni_per_cycle=2.0)
    cyc = b["cycles_per_16_tokens"]
    assert cyc["amx_dense"] == 16 * 8 and cyc["vnni_quads"] == c["quads"] / 2
    assert b["vs_dense_amx"]["amx_gathered"] == pytest.approx(8 / c["gathered_tiles"])
    assert b["vs_dense_amx"]["vnni_quads"] == pytest.approx(128 / (c["quads"] / 2))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_greedy_row_order_keeps_16x4_blocks_together_beside_empty_rows(seed):
    # rows of a pruned-away block add no quad to any union, like a block's own rows: on that tie the
    # grouping must take the block's rows (the densest), or it splits blocks across groups
    rng = np.random.default_rng(seed)
    keep = rng.random((4, 32)) < 0.6
    keep[1] = False
    quads = at.quad_mask(np.repeat(np.repeat(keep, 16, axis=0), 4, axis=1))
    shuffled = quads[rng.permutation(64)]
    assert at.gathered_tiles(shuffled, at.greedy_row_order(shuffled)) == at.gathered_tiles(quads, np.arange(64))


def _two_nonzero_model(path):
    """A tiny BERT whose encoder Linears are all zero but two weights of layer 0's FFN output (32 × 64)."""
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, vocab_size=50))
    with torch.no_grad():
        for name, p in model.bert.encoder.named_parameters():
            if name.endswith(".weight") and p.ndim == 2:
                p.zero_()
        w = model.bert.encoder.layer[0].output.dense.weight
        w[0, 0], w[20, 63] = 1.0, -1.0   # two quads, in the two row groups
    model.save_pretrained(path, safe_serialization=True)


def test_analyse_one_saved_model_and_the_json(tmp_path):
    _two_nonzero_model(tmp_path / "m")
    out = tmp_path / "t.json"
    assert at.main([str(tmp_path / "m"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["assumptions"] == {"vnni_per_cycle": 2.0, "amx_cycles_per_tile": 16.0, "tile": "16 outputs x 64 inputs"}
    (rec,) = doc["models"]
    assert rec["model"] == "m" and len(rec["matrices"]) == 12
    enc = rec["encoder"]
    # per layer: q, k, v, attention output 2 tiles each (32 × 32), FFN in 4 (64 × 32), FFN out 2 (32 × 64)
    assert (enc["nonzeros"], enc["quads"], enc["dense_tiles"]) == (2, 2, 28)
    assert (enc["aligned_tiles"], enc["gathered_tiles"], enc["gathered_tiles_greedy_rows"]) == (2, 2, 2)
    assert enc["cycles_per_16_tokens"] == {"amx_dense": 448.0, "vnni_quads": 1.0, "amx_aligned": 32.0,
                                           "amx_gathered": 32.0, "amx_gathered_greedy_rows": 32.0}
    assert enc["vs_dense_amx"]["vnni_quads"] == 448.0 and enc["vs_dense_amx"]["amx_aligned"] == 14.0
    assert rec["quad_fill_aligned"] == pytest.approx(2 / 512)
    ffn_out = rec["matrices"]["bert.encoder.layer.0.output.dense.weight"]
    assert ffn_out["shape"] == [32, 64] and ffn_out["vs_dense_amx"]["amx_gathered"] == 1.0
    # a matrix with no work has no ratio: null in the JSON, not Infinity
    assert rec["matrices"]["bert.encoder.layer.1.output.dense.weight"]["vs_dense_amx"]["amx_aligned"] is None


def test_no_greedy_leaves_the_greedy_column_empty(tmp_path, capsys):
    _two_nonzero_model(tmp_path / "m")
    out = tmp_path / "t.json"
    assert at.main([str(tmp_path / "m"), "--no-greedy", "--out", str(out)]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row == "| m | 1.000 | 2 | 28 | 2 | 2 | — | 448.00 | 14.00 | 14.00 | — |"
    enc = json.loads(out.read_text())["models"][0]["encoder"]
    assert enc["gathered_tiles_greedy_rows"] is None and "amx_gathered_greedy_rows" not in enc["vs_dense_amx"]


def test_bad_folders_are_skipped_and_a_bad_rate_refused(tmp_path, capsys):
    from safetensors.numpy import save_file

    (tmp_path / "x").mkdir()
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(tmp_path / "x" / "model.safetensors"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not safetensors")
    assert at.main([str(tmp_path / "x"), str(tmp_path / "missing"), str(tmp_path / "bad"), "--no-greedy"]) == 1
    err = capsys.readouterr().err
    assert "no BERT encoder Linear weights" in err
    assert "No such file" in err                       # the missing folder's OSError
    assert f"skipped {tmp_path / 'bad'}" in err        # a corrupt file is skipped, not a crash
    with pytest.raises(SystemExit) as e:
        at.main([str(tmp_path / "x"), "--vnni-per-cycle", "0"])
    assert e.value.code == 2
