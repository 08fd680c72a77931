"""Data augmentation for distillation (pruners/augment.py): neighbour table against brute force,
substitution rate and scope, live teacher logits for the copies, and the training pruners with it."""
import copy

import pytest
import torch

from profiler.tasks import TinySynthetic
from profiler.tasks.base import Example
from profiler.tasks.textdata import read_rows, packaged_glue_dir, unlabeled_texts
from pruners.augment import ExtraText, TokenAugmenter, nearest_neighbours
from pruners.distill import Distiller
from pruners.gmp import GMPPruner
from pruners.obs import OBSPruner
from tests.conftest import load_script


@pytest.fixture(scope="module")
def tiny():
    task = TinySynthetic(finetune_steps=0, n_train=128, n_eval=32)
    return task, task.base_model().eval()


def test_neighbours_are_the_cosine_top_k_among_candidates():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(60, 8, generator=g)
    cands = list(range(5, 60, 2))
    table = nearest_neighbours(emb, cands, k=4)
    assert table.shape == (60, 4)
    e = torch.nn.functional.normalize(emb, dim=1)
    for i in range(60):
        if i not in cands:
            assert table[i].tolist() == [-1] * 4
            continue
        sims = {j: float(e[i] @ e[j]) for j in cands if j != i}
        want = sorted(sims, key=lambda j: -sims[j])[:4]
        assert table[i].tolist() == want
    with pytest.raises(ValueError, match="candidates"):
        nearest_neighbours(emb, [1, 2, 3], k=4)
    with pytest.raises(ValueError, match="candidate ids"):
        nearest_neighbours(emb, list(range(50, 70)), k=4)


def test_perturb_replaces_candidates_only_at_the_token_rate_and_is_seeded():
    emb = torch.randn(100, 16, generator=torch.Generator().manual_seed(1))
    cands = list(range(20, 100))
    aug = TokenAugmenter(emb, cands, fraction=1.0, seed=3)
    ids = [101, 0, 5] + list(range(20, 100)) * 50 + [102]  # 101/102 outside the table, 0 and 5 not candidates
    new = aug.perturb(ids)
    assert len(new) == len(ids) and new[:3] == ids[:3] and new[-1] == ids[-1]
    changed = [(a, b) for a, b in zip(ids, new) if a != b]
    assert all(b in aug.table[a].tolist() for a, b in changed)
    n = 80 * 50  # candidate tokens; neighbours are never the token itself, so changed = replaced
    assert aug.tokens == len(changed)
    assert abs(len(changed) - 0.4 * n) < 6 * (n * 0.4 * 0.6) ** 0.5
    assert TokenAugmenter(emb, cands, 1.0, seed=3).perturb(ids) == new


def test_a_vocabulary_smaller_than_k_draws_from_all_its_other_words():
    emb = torch.randn(30, 8, generator=torch.Generator().manual_seed(2))
    aug = TokenAugmenter(emb, range(20, 26), fraction=1.0, seed=0)  # 6 words < K + 1 = 16
    assert aug.k == 5 and aug.describe()["k_neighbours"] == 5
    for w in range(20, 26):
        assert sorted(aug.table[w].tolist()) == [c for c in range(20, 26) if c != w]
    new = aug.perturb(list(range(20, 26)) * 20)
    assert all(20 <= t < 26 for t in new) and new != list(range(20, 26)) * 20
    with pytest.raises(ValueError, match="augment: the task's vocabulary has 1 whole-word"):
        TokenAugmenter(emb, [20, 20], fraction=0.5)


def test_batch_replaces_a_fraction_and_leaves_the_data_untouched(tiny):
    task, dense = tiny
    data = task.train_examples()
    before = [list(e.input_ids) for e in data[:64]]
    aug = TokenAugmenter(dense.get_input_embeddings().weight, task.augment_vocab()[0], fraction=0.5, seed=0)
    out, copies = aug.batch(data[:64])
    assert copies.dtype == torch.bool and copies.shape == (64,) and 10 < int(copies.sum()) < 54
    assert [list(e.input_ids) for e in data[:64]] == before
    for e, o, c in zip(data[:64], out, copies.tolist()):
        assert (o is e) != c and len(o.input_ids) == len(e.input_ids) and o.label == e.label
    assert aug.describe()["examples_augmented"] == int(copies.sum())


def test_copies_get_the_live_teacher_and_stay_out_of_the_cache(tiny):
    task, dense = tiny
    exs = task.train_examples()[:8]
    aug = TokenAugmenter(dense.get_input_embeddings().weight, task.augment_vocab()[0], fraction=1.0, seed=0)
    d = Distiller(dense, examples=[e.input_ids for e in task.train_examples()])
    mixed = [aug.perturb(e.input_ids) if i % 2 else e.input_ids for i, e in enumerate(exs)]
    inputs, _ = task.collate([type(e)(input_ids=m, label=e.label) for e, m in zip(exs, mixed)])
    live = torch.tensor([i % 2 == 1 for i in range(8)])
    got = d.teacher_logits(inputs, list(range(8)), live)
    with torch.no_grad():
        want = dense(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert d.cache.have[:8].tolist() == [True, False] * 4  # only the originals were cached


def assert_cache_holds_only_training_examples(task, dense, cache_dir):
    """The teacher-logit cache holds the training examples the loop saw, never a copy or a drawn
    text: each cached row is the teacher's logits on that training example."""
    d = Distiller(dense, examples=[e.input_ids for e in task.train_examples()], cache_dir=cache_dir)
    have = d.cache.have.nonzero().flatten().tolist()
    assert have
    inputs, _ = task.collate([task.train_examples()[i] for i in have])
    with torch.no_grad():
        torch.testing.assert_close(d.cache.logits[have], dense(**inputs).logits, rtol=1e-5, atol=1e-6)


def test_gmp_trains_with_augmentation_and_records_it(tiny, tmp_path):
    task, dense = tiny
    with pytest.raises(ValueError, match="needs distill"):
        GMPPruner(sparsity=0.5, steps=4, augment=0.5)
    with pytest.raises(ValueError, match="augment"):
        GMPPruner(sparsity=0.5, steps=4, distill=True, augment=1.5)
    with pytest.raises(ValueError, match="augment.*one-shot"):
        OBSPruner(sparsity=0.5, steps=0, distill=True, augment=0.5)
    model = copy.deepcopy(dense)
    pruner = GMPPruner(sparsity=0.5, steps=6, update_every=2, end_frac=0.5, distill=True, alpha=0.5, augment=0.5,
                       batch_size=8, precision="fp32")
    pruner.cache_dir = tmp_path
    report = pruner.prune(model, task)
    assert report.sparsity_prunable == pytest.approx(0.5)
    a = report.notes["augmentation"]
    assert 0 < a["examples_augmented"] < 48 and a["tokens_replaced"] > 0 and a["p_token"] == 0.4
    assert report.notes["distillation"]["augment"] == 0.5
    assert_cache_holds_only_training_examples(task, dense, tmp_path)


def test_a_task_without_a_vocabulary_refuses_augmentation(tiny):
    task, dense = tiny

    class NoVocab(TinySynthetic):
        def augment_vocab(self):
            return None

    t = NoVocab(finetune_steps=0, n_train=32, n_eval=8)
    with pytest.raises(ValueError, match="vocabulary"):
        GMPPruner(sparsity=0.5, steps=2, distill=True, augment=0.5).prune(copy.deepcopy(dense), t)


def test_unlabeled_texts_reads_glue_sentences_and_txt_files(tmp_path):
    from profiler.tasks.textdata import GLUE
    from pruners.augment import TEXT_SETS

    assert TEXT_SETS == tuple(GLUE)  # the sets a pruner accepts are the ones the tasks ship
    rows = read_rows(packaged_glue_dir("mrpc") / "train.tsv")
    want = {r[c].strip() for r in rows for c in ("sentence1", "sentence2")} - {""}
    got = unlabeled_texts("mrpc")
    assert len(got) == len(set(got)) == len(want) and set(got) == want
    assert len(unlabeled_texts("sst2")) == len({r["sentence"].strip() for r in read_rows(packaged_glue_dir("sst2") / "train.tsv")})
    f = tmp_path / "reviews.txt"
    f.write_text("a fine film\n\n  a fine film \nslow and dull\n", encoding="utf-8")
    assert unlabeled_texts(str(f)) == ["a fine film", "slow and dull"]
    with pytest.raises(ValueError, match="use one of sst2, mrpc, stsb"):
        unlabeled_texts("imdb")
    with pytest.raises(ValueError, match="does not exist"):
        unlabeled_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        unlabeled_texts(str(tmp_path / "latin1.txt"))
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        unlabeled_texts(str(tmp_path / "blank.txt"))


def test_unlabeled_pairs_reads_glue_pairs_and_tab_separated_lines(tmp_path):
    from profiler.tasks.textdata import unlabeled_pairs

    rows = read_rows(packaged_glue_dir("mrpc") / "train.tsv")
    want = {(r["sentence1"].strip(), r["sentence2"].strip()) for r in rows}
    got = unlabeled_pairs("mrpc")
    assert len(got) == len(set(got)) == len(want) and set(got) == want
    f = tmp_path / "pairs.txt"
    f.write_text("a cat sat\ta cat was sitting\n\n a cat sat \t a cat was sitting\nhe left\tshe\tstayed\n",
                 encoding="utf-8")
    assert unlabeled_pairs(str(f)) == [("a cat sat", "a cat was sitting"), ("he left", "she\tstayed")]
    for text, line in (("one\ttwo\njust one text\n", 2), ("\t second only\n", 1)):
        f.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=f"line {line}: a pair task needs two tab-separated texts"):
            unlabeled_pairs(str(f))
    with pytest.raises(ValueError, match="'sst2' holds single sentences"):
        unlabeled_pairs("sst2")
    with pytest.raises(ValueError, match="use one of sst2, mrpc, stsb"):
        unlabeled_pairs("imdb")
    (tmp_path / "blank.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no sentence pair"):
        unlabeled_pairs(str(tmp_path / "blank.txt"))


def test_extra_text_replaces_a_seeded_share_of_the_batch_from_its_pool():
    pool = [Example([1, 100 + i, 2], 0) for i in range(50)]
    batch = [Example([1, 10 + i % 7, 2], i % 2) for i in range(2000)]
    out, extra = ExtraText(pool, 0.25, seed=0).batch(batch)
    assert extra.dtype == torch.bool and extra.shape == (2000,)
    assert 0.2 < extra.float().mean().item() < 0.3  # binomial(2000, 0.25): sd 0.01
    assert all(o is b for o, b, x in zip(out, batch, extra.tolist()) if not x)
    assert all(any(o is p for p in pool) for o, x in zip(out, extra.tolist()) if x)
    assert len({tuple(o.input_ids) for o, x in zip(out, extra.tolist()) if x}) > 40  # draws spread over the pool
    again, extra2 = ExtraText(pool, 0.25, seed=0).batch(batch)
    assert torch.equal(extra, extra2) and [o.input_ids for o in again] == [o.input_ids for o in out]
    with pytest.raises(ValueError, match="distill_text_share"):
        ExtraText(pool, 0.0)
    with pytest.raises(ValueError, match="no texts"):
        ExtraText([], 0.5)


class _Texts(TinySynthetic):
    """TinySynthetic with a toy tokenizer: one id per character, inside the model's vocabulary."""

    def encode_texts(self, texts):
        return [Example([1] + [10 + ord(c) % 100 for c in t] + [2], 0) for t in texts]


def test_gmp_distils_on_extra_text_and_records_it(tiny, tmp_path):
    task, dense = tiny
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(f"unlabeled text number {i}" for i in range(40)), encoding="utf-8")
    for bad, match in (({"distill_text": [str(f)], "distill_text_share": 0.5}, "needs distill"),
                       ({"distill": True, "distill_text": [str(f)]}, "go together"),
                       ({"distill": True, "distill_text_share": 0.5}, "go together"),
                       ({"distill": True, "distill_text": "mrpc", "distill_text_share": 0.5}, "list of text sources"),
                       ({"distill": True, "distill_text": ["imdb"], "distill_text_share": 0.5},
                        "distill_text: text source 'imdb': use one of sst2"),
                       ({"distill": True, "distill_text": ["mrpc"], "distill_text_share": 0.5, "augment": 0.5}, "one of augment")):
        with pytest.raises(ValueError, match=match):
            GMPPruner(sparsity=0.5, steps=4, **bad)
    with pytest.raises(ValueError, match="distill_text_share.*one-shot"):
        OBSPruner(sparsity=0.5, steps=0, distill=True, distill_text=["mrpc"], distill_text_share=0.5)
    with pytest.raises(ValueError, match="cannot tokenize"):
        GMPPruner(sparsity=0.5, steps=2, distill=True, distill_text=[str(f)], distill_text_share=0.5).prune(
            copy.deepcopy(dense), task)
    # a file's content is part of the pruned model's cache key; the packaged sets ship with the package
    p = GMPPruner(sparsity=0.5, steps=2, distill=True, distill_text=["mrpc", str(f)], distill_text_share=0.5)
    before = p.data_fingerprint()
    assert list(before) == [str(f)] and len(before[str(f)]) == 64
    assert GMPPruner(sparsity=0.5, steps=2, distill=True).data_fingerprint() == {}
    f.write_text(f.read_text(encoding="utf-8") + "\none more", encoding="utf-8")
    assert p.data_fingerprint() != before
    t = _Texts(finetune_steps=0, n_train=128, n_eval=32)
    pruner = GMPPruner(sparsity=0.5, steps=6, update_every=2, end_frac=0.5, distill=True, alpha=0.5, hidden_distill=1.0,
                       distill_text=[str(f)], distill_text_share=0.5, batch_size=8, precision="fp32")
    pruner.cache_dir = tmp_path
    report = pruner.prune(copy.deepcopy(dense), t)
    assert report.sparsity_prunable == pytest.approx(0.5)
    a = report.notes["augmentation"]
    assert 0 < a["examples_drawn"] < 48 and a["texts"] == 41 and a["sources"] == [str(f)]
    assert report.notes["distillation"]["distill_text_share"] == 0.5
    assert_cache_holds_only_training_examples(t, dense, tmp_path)


def test_sst2_candidates_are_whole_words():
    from profiler.tasks.sst2 import SST2

    task = SST2()
    tok = task.tokenizer
    words, pieces = task.augment_vocab()
    cands = set(words)
    vocab = tok.get_vocab()
    assert vocab["good"] in cands and vocab["movie"] in cands
    assert not cands & set(tok.all_special_ids)
    assert not any(vocab[t] in cands for t in vocab if t.startswith("##"))
    assert len(cands) > 15000 and vocab["##ions"] in pieces
    aug = TokenAugmenter(torch.randn(len(vocab), 8), words, 1.0, 0, pieces, p_token=1.0)
    ids = tok("secretions are good")["input_ids"]  # [CLS] secret ##ions are good [SEP]
    new = aug.perturb(ids)
    assert new[1:3] == ids[1:3] and new[3] != ids[3] and new[4] != ids[4]
    enc = task.encode_texts(["secretions are good", "a fine film"])
    assert [e.input_ids for e in enc] == [ids, tok("a fine film")["input_ids"]] and {e.label for e in enc} == {0}


def test_teacher_agreement_script_measures_what_it_says(tiny):
    """scripts/teacher_agreement.py: a student equal to its teacher agrees everywhere with no
    distillation loss; one forced to class 1 agrees exactly where the teacher predicts class 1."""
    task, dense = tiny
    compare = load_script("teacher_agreement").compare
    exs = task.eval_examples()
    same = compare(dense, copy.deepcopy(dense), task, exs, 2.0)
    assert same["agreement"] == 1.0 and same["t2_kl_mean"] == pytest.approx(0.0, abs=1e-6)
    assert same["hidden_mse_per_layer"] == [0.0] * task.num_layers and same["examples"] == len(exs)
    forced = copy.deepcopy(dense)
    with torch.no_grad():
        forced.classifier.bias.copy_(torch.tensor([-1e4, 1e4]))
    got = compare(dense, forced, task, exs, 2.0)
    inputs, _ = task.collate(exs)
    with torch.no_grad():
        want = float((dense(**inputs).logits.argmax(-1) == 1).float().mean())
    assert got["agreement"] == pytest.approx(want) and got["t2_kl_mean"] > 0
    assert got["hidden_mse_per_layer"] == [0.0] * task.num_layers  # the head changed, not the encoder
    # by length: buckets partition the examples; each bucket's agreement is the forced class's share there
    lengths = [len(e.input_ids) for e in exs]
    edge = sorted(lengths)[len(lengths) // 2]
    split = compare(dense, forced, task, exs, 2.0, (edge,))
    buckets = split["by_length"]
    assert sum(b["examples"] for b in buckets) == len(exs) and buckets[0]["tokens"][0] == 0
    for b in buckets:
        part = [e for e in exs if b["tokens"][0] <= len(e.input_ids) < b["tokens"][1]]
        inputs, labels = task.collate(part)
        with torch.no_grad():
            teacher_pred = dense(**inputs).logits.argmax(-1)
        assert b["examples"] == len(part)
        assert b["agreement"] == pytest.approx(float((teacher_pred == 1).float().mean()))
        assert b["student_metric"] == pytest.approx(float((labels.long() == 1).float().mean()))


def test_teacher_agreement_length_edges_are_checked():
    """--length-edges: ascending positive integers, or an argparse error naming the input."""
    import argparse

    edges = load_script("teacher_agreement")._edges
    assert edges("16,24,32") == (16, 24, 32) and edges("") == ()
    for bad in ("3,2", "0,4", "a,4", "8,8"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            edges(bad)
