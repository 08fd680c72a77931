"""Cell identity: one hash, and the ids every row carries (cell, recipe, model)."""
import hashlib
import json
import math

from profiler.config import expand, parse_config
from profiler.identity import cell_id, ids_of_row, model_id, recipe_id, stable_hash
from tests.conftest import tiny_config


def _sha(obj, n=12):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:n]


def test_stable_hash_is_canonical_json_sha256():
    assert stable_hash({"b": 1, "a": [1, 2]}) == _sha({"a": [1, 2], "b": 1})
    assert stable_hash("x", 8) == _sha("x", 8) and len(stable_hash("x")) == 12


def test_ids_of_cells():
    cells = expand(parse_config(tiny_config(matrix={"batch_size": [1, 4], "seq_len": [16], "threads": [1, 2],
                                                   "kernel_variant": ["auto", "scalar"]})))
    c = cells[0]
    assert c.cell_id == cell_id(c.canonical()) == _sha(c.canonical())
    recipe = {k: v for k, v in c.canonical().items() if k not in ("threads", "kernel_variant")}
    assert c.recipe_id == _sha(recipe)
    assert c.model_id == _sha([c.task.canonical(), c.pruner.canonical(), c.accelerator.canonical(), c.kernel_variant])
    # threads and kernel variant change the cell, not the recipe; batch changes the recipe, not the model
    same_recipe = [d for d in cells if d.recipe_id == c.recipe_id]
    assert len(same_recipe) == 4 and len({d.cell_id for d in same_recipe}) == 4
    same_model = [d for d in cells if d.model_id == c.model_id]
    assert {(d.batch_size, d.threads) for d in same_model} == {(1, 1), (1, 2), (4, 1), (4, 2)}


def test_ids_of_row_recompute_what_the_cell_gives():
    c = expand(parse_config(tiny_config()))[3]
    row = {"task": c.task.name, "task_params": c.task.params, "pruner": c.pruner.name, "pruner_params": c.pruner.params,
           "accelerator": c.accelerator.name, "accelerator_params": c.accelerator.params,
           "batch_size": c.batch_size, "seq_len": c.seq_len, "kernel_variant": c.kernel_variant}
    assert ids_of_row(row) == {"recipe_id": c.recipe_id, "model_id": c.model_id}
    # a frame's missing values (NaN) read as absent params / the default variant
    assert ids_of_row({**row, "task_params": math.nan})["recipe_id"] == recipe_id(
        {"name": c.task.name, "params": None}, c.pruner.canonical(), c.accelerator.canonical(), c.batch_size, c.seq_len)
    assert ids_of_row({**row, "kernel_variant": None})["model_id"] == model_id(
        c.task.canonical(), c.pruner.canonical(), c.accelerator.canonical(), "auto")
