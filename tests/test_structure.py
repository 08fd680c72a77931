"""Block and N:M masks have exactly their structure; layer-wise vs global selection."""
import pytest
import torch

from pruners.magnitude import MagnitudePruner
from pruners.structure import parse_structure


def _scores(seed=0, shapes=((8, 16), (16, 8))):
    g = torch.Generator().manual_seed(seed)
    return {f"l{i}": torch.rand(s, generator=g) for i, s in enumerate(shapes)}


def test_n_m_2_4_exact():
    sc = _scores()
    masks = parse_structure("2:4").masks(sc, 0.5)
    for n, m in masks.items():
        groups = m.reshape(m.shape[0], -1, 4)
        assert (groups.sum(-1) == 2).all()  # exactly 2 kept in every group of 4 along the input dim
        # and they are the 2 highest scores of their group
        s = sc[n].reshape(m.shape[0], -1, 4)
        top2 = s.topk(2, dim=-1).indices
        assert groups.gather(-1, top2).all()


def test_n_m_intermediate_and_validation():
    st = parse_structure("2:4")
    m = st.masks(_scores(), 0.25)["l0"]  # intermediate schedule value: 1 of 4 dropped per group
    assert (m.reshape(8, -1, 4).sum(-1) == 3).all()
    with pytest.raises(ValueError, match="1 - N/M"):
        st.check_sparsity(0.9)
    with pytest.raises(ValueError, match="multiple of M"):
        st.masks({"x": torch.rand(4, 6)}, 0.5)


def test_n_m_sparsity_as_the_error_prints_it_is_accepted():
    st = parse_structure("2:3")
    with pytest.raises(ValueError, match=r"set sparsity = 0\.333333") as e:
        st.check_sparsity(0.5)
    st.check_sparsity(float(str(e.value).split("set sparsity = ")[1].split()[0]))  # what the user copies
    with pytest.raises(ValueError, match="1 - N/M"):
        st.check_sparsity(0.3334)


@pytest.mark.parametrize("spec, r, c", [("1x4", 1, 4), ("4x1", 4, 1)])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_block_masks_exact(spec, r, c, scope):
    sc = _scores(1)
    masks = parse_structure(spec).masks(sc, 0.75, scope)
    total_blocks = sum(s.numel() // (r * c) for s in sc.values())
    dropped = 0
    for n, m in masks.items():
        blocks = m.reshape(m.shape[0] // r, r, m.shape[1] // c, c)
        # every block is all kept or all dropped
        assert (blocks.all(dim=(1, 3)) == blocks.any(dim=(1, 3))).all()
        nb = blocks.shape[0] * blocks.shape[2]
        d = int((~blocks.all(dim=(1, 3))).sum())
        if scope == "layer":
            assert d == round(0.75 * nb)
        dropped += d
    assert dropped == round(0.75 * total_blocks) or scope == "layer"


def test_block_drops_lowest_l1_blocks():
    s = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 5.0]])  # block sums 4.0 and 5.3
    assert parse_structure("1x4").masks({"w": s}, 0.5)["w"].tolist() == [[False] * 4 + [True] * 4]


def test_global_scope_ranks_across_layers():
    sc = {"a": torch.full((4, 4), 1.0), "b": torch.full((4, 4), 2.0)}
    m = parse_structure("unstructured").masks(sc, 0.5, "global")
    assert not m["a"].any() and m["b"].all()
    m = parse_structure("unstructured").masks(sc, 0.5, "layer")
    assert int(m["a"].sum()) == 8 and int(m["b"].sum()) == 8


@pytest.mark.parametrize("bad", ["2x", "0:4", "4:4", "1x1", "blocks", "3:2"])
def test_bad_structure_names_choices(bad):
    with pytest.raises(ValueError, match="unstructured"):
        parse_structure(bad)


def test_magnitude_pruner_with_structure():
    from profiler.tasks import TinySynthetic

    task = TinySynthetic(finetune_steps=0)
    model = task.base_model()
    rep = MagnitudePruner(sparsity=0.5, structure="2:4").prune(model, task)
    assert rep.sparsity_prunable == 0.5
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    assert ((w != 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()
    with pytest.raises(ValueError, match="structure"):
        MagnitudePruner(sparsity=0.9, structure="4y1")
