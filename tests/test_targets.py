"""Hardware targets of a Ray run without a cluster: the [targets] and [ray] config tables, label
selectors against node labels, the unknown-label check, the no-live-node clock, and how the
driver cuts cells into units and decides what a resumed run runs again."""
from __future__ import annotations

import json

import pytest

from profiler.config import expand, parse_config
from profiler.errors import ConfigError
from profiler.executors.ray_driver import plan_units
from profiler.results import NO_LIVE_NODE, cells_to_run, read_results, rewrite_without
from profiler.runner import interleave_key
from profiler.targets import (NodeInfo, RaySettings, TargetWatch, dead_only_targets, default_targets, live_targets,
                              resolve_targets, selector_matches)
from tests.conftest import tiny_config


def node(label: str | None, alive: bool = True, cpus: int = 4, gpus: int = 0, **labels: str) -> NodeInfo:
    all_labels = {"ray.io/node-id": "x", **labels, **({"sparsebench.target": label} if label else {})}
    return NodeInfo(node_id=f"n-{label}-{alive}-{cpus}", alive=alive, labels=all_labels, cpus=cpus, gpus=gpus)


def test_targets_table_shorthand_and_selectors():
    cfg = parse_config(tiny_config(targets={"spr": "spr", "big": {"sparsebench.target": "in(spr, emr)",
                                                                  "ray.io/market-type": "!spot"}}))
    assert cfg.targets == {"spr": {"sparsebench.target": "spr"},
                           "big": {"sparsebench.target": "in(spr, emr)", "ray.io/market-type": "!spot"}}
    assert cfg.ray == RaySettings() and parse_config(tiny_config()).targets is None
    cfg = parse_config(tiny_config(ray={"max_retries": 0, "target_timeout_s": 2}))
    assert (cfg.ray.max_retries, cfg.ray.target_timeout_s) == (0, 2.0)
    # the cells (and their ids) do not depend on where they run
    assert [c.cell_id for c in expand(cfg)] == [c.cell_id for c in expand(parse_config(tiny_config()))]


@pytest.mark.parametrize("extra, words", [
    ({"targets": {}}, ["targets:", "at least one"]),
    ({"targets": "spr"}, ["targets:", "table"]),
    ({"targets": {"a/b": "x"}}, ["targets.a/b", "target name"]),
    ({"targets": {"spr": 3}}, ["targets.spr", "label value"]),
    ({"targets": {"spr": {}}}, ["targets.spr", "non-empty table"]),
    ({"targets": {"spr": {"bad key!": "x"}}}, ["targets.spr", "not a Ray label key"]),
    ({"targets": {"spr": "in()"}}, ["targets.spr", "not a selector", '"!in(v1,v2)"']),
    ({"targets": {"spr": {"sparsebench.target": "-x"}}}, ["targets.spr", "valid forms"]),
    ({"ray": {"retries": 1}}, ["ray.retries", "valid keys: max_retries, target_timeout_s"]),
    ({"ray": {"max_retries": -1}}, ["ray.max_retries", "[0, 100]"]),
    ({"ray": {"max_retries": True}}, ["ray.max_retries"]),
    ({"ray": {"target_timeout_s": 0}}, ["ray.target_timeout_s", "(0, 604800]"]),
    ({"ray": []}, ["ray:", "table"]),
])
def test_bad_targets_and_ray_tables_name_the_key(extra, words):
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**extra))
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_selectors_follow_rays_semantics():
    labels = {"sparsebench.target": "spr", "zone": "eu"}
    assert selector_matches({"sparsebench.target": "spr"}, labels)
    assert not selector_matches({"sparsebench.target": "zen5"}, labels)
    assert selector_matches({"sparsebench.target": "in(zen5, spr)", "zone": "eu"}, labels)
    assert not selector_matches({"sparsebench.target": "in(zen5,emr)"}, labels)
    assert selector_matches({"sparsebench.target": "!zen5"}, labels)
    assert not selector_matches({"sparsebench.target": "!in(spr,emr)"}, labels)
    assert selector_matches({"gpu": "!h100"}, labels)  # a negation also matches a node without the label
    assert not selector_matches({"gpu": "h100"}, labels)


def test_default_targets_are_the_label_values_of_live_nodes():
    nodes = [node("spr"), node("zen5"), node("spr"), node("arm", alive=False), node(None, zone="eu")]
    assert default_targets(nodes) == {"spr": {"sparsebench.target": "spr"}, "zen5": {"sparsebench.target": "zen5"}}
    # left out, so the driver warns about it: a dead "spr" node beside live ones is no such label
    assert dead_only_targets([*nodes, node("spr", alive=False)]) == ["arm"]
    with pytest.raises(ConfigError) as exc:
        default_targets([node(None, zone="eu"), node("spr", alive=False)])
    assert "no live node" in str(exc.value) and "zone: eu" in str(exc.value) and "--labels=sparsebench.target=" in str(exc.value)


def test_an_unknown_label_fails_and_a_target_with_only_dead_nodes_waits():
    nodes = [node("spr", cpus=8), node("spr", cpus=4), node("zen5", alive=False)]
    with pytest.raises(ConfigError) as exc:
        resolve_targets({"spr": {"sparsebench.target": "spr"}, "x": {"sparsebench.target": "sapphire"}}, nodes)
    assert str(exc.value).startswith("targets.x: no node of the cluster matches sparsebench.target=sapphire")
    assert "sparsebench.target: spr, zen5" in str(exc.value)
    targets = resolve_targets({"spr": {"sparsebench.target": "spr"}, "zen5": {"sparsebench.target": "zen5"}}, nodes)
    assert targets["spr"].cpus == 4 and "differ in CPU/GPU count" in targets["spr"].notes[0]  # a unit fits each node
    assert live_targets(targets, nodes) == {"spr": True, "zen5": False}


def test_target_watch_gives_up_after_the_timeout_without_a_live_node():
    now = [0.0]
    watch = TargetWatch(10.0, clock=lambda: now[0])
    assert not watch.update("b", True) and watch.waited_s("b") == 0.0
    assert not watch.update("b", False)
    now[0] = 10.0
    assert not watch.update("b", False) and watch.waited_s("b") == 10.0
    now[0] = 10.5
    assert watch.update("b", False)
    assert not watch.update("b", True) and not watch.update("b", False)  # a node came back: the clock restarts


def test_units_are_the_runners_interleave_groups_or_one_pruner_each():
    cells = expand(parse_config(tiny_config()))
    units = plan_units(cells, "interleaved")
    assert len(units) == 2 and sum(map(len, units)) == len(cells)
    for unit in units:  # every pruner and accelerator of one shape, as Runner._run_task groups them
        assert len({interleave_key(c) for c in unit}) == 1 and len({c.pruner for c in unit}) == 3
    units = plan_units(cells, "sequential")
    assert len(units) == 3 and all(len({c.pruner for c in u}) == 1 for u in units)
    assert [c.cell_id for u in units for c in u] == [c.cell_id for c in cells]  # matrix order kept


def _row(cell, status="ok", **extra):
    return {"cell_id": cell.cell_id, "status": status, **extra}


def test_resume_runs_missing_cells_and_those_that_never_ran():
    cells = expand(parse_config(tiny_config()))
    rows = [_row(cells[0]), _row(cells[1], "failed"), _row(cells[2], "skipped", executor_outcome=NO_LIVE_NODE),
            _row(cells[3], "skipped")]
    done, todo, redo = cells_to_run(rows, cells, retry_failed=False)
    assert done == {c.cell_id for c in cells[:2]} | {cells[3].cell_id} and redo == {cells[2].cell_id}
    assert [c.cell_id for c in todo] == [c.cell_id for c in cells[2:3] + cells[4:]]
    done, todo, redo = cells_to_run(rows, cells, retry_failed=True)
    assert redo == {cells[1].cell_id, cells[2].cell_id} and cells[1] in todo


def test_rewrite_without_is_atomic_and_keeps_other_lines_byte_for_byte(tmp_path):
    from tests.test_results import make

    path = tmp_path / "results.jsonl"
    rows = [make(cell_id=f"c{i}").to_json() for i in range(4)]
    path.write_text(rows[0] + "\n" + "{damaged\n" + rows[1] + "\n" + rows[2] + "\n" + rows[3] + "\n")
    assert rewrite_without(path, {"c1", "c3", "absent"}) == 2
    assert path.read_text() == rows[0] + "\n" + "{damaged\n" + rows[2] + "\n"
    assert rewrite_without(path, set()) == 0 and [r["cell_id"] for r in read_results(path).rows] == ["c0", "c2"]
    assert not list(tmp_path.glob("*.rewrite")) and json.loads(rows[0])["cell_id"] == "c0"
