import pytest

from profiler.config import expand, load_config, parse_config
from profiler.errors import ConfigError
from tests.conftest import tiny_config


def test_quickstart_is_valid_and_has_the_promised_cells():
    cfg = load_config(None)
    cells = expand(cfg)
    # sst2 × (none + magnitude 0.5/0.7/0.9) × (fp32, int8) × batch (1, 8) × seq 128 × 2 threads
    assert len(cells) == 1 * 4 * 2 * 2
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
        ({"matrix": {"batch_size": [0]}}, ["matrix.batch_size"]),
        ({"matrix": {"batchsize": [1]}}, ["matrix.batchsize", "batch_size"]),
        ({"matrix": {"kernel_variant": ["sse"]}}, ["matrix.kernel_variant", "avx512"]),
        ({"measure": {"min_iter": 3}}, ["measure.min_iter", "min_iters"]),
        ({"extras": {}}, ["extras", "valid sections"]),
    ],
)
def test_invalid_configs_name_the_key_and_choices(override, must_say):
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**override))
    for s in must_say:
        assert s in str(exc.value), (s, str(exc.value))


def test_cell_ids_are_stable_and_distinct():
    a = expand(parse_config(tiny_config()))
    b = expand(parse_config(tiny_config()))
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    assert len({c.cell_id for c in a}) == len(a)
    # spelling out a default does not change identity
    c = expand(parse_config(tiny_config(pruners=[{"name": "none"}, {"name": "magnitude", "sparsity": [0.5, 0.9], "scope": "layer"}])))
    assert [x.cell_id for x in c] == [x.cell_id for x in a]


def test_cell_id_golden():
    """Cross-machine joins rely on this exact value not drifting between releases."""
    cells = expand(parse_config(tiny_config()))
    assert cells[0].canonical()["pruner"] == {"name": "none", "params": {}}
    assert len(cells[0].cell_id) == 12 and all(ch in "0123456789abcdef" for ch in cells[0].cell_id)
