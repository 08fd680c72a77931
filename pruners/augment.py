"""Data for distillation beyond the task's labelled set: word substitution by embedding neighbours
(TinyBERT, :class:`TokenAugmenter`) and unlabeled text the teacher labels (:class:`ExtraText`).

TinyBERT (Jiao et al. 2020, §3.2 and Algorithm 1) distils the student on the task's training set
*plus* perturbed copies of its sentences: each word is replaced, with probability ``p_t = 0.4``, by
one of its ``K = 15`` nearest candidates (from BERT's masked-LM for single-piece words, GloVe
neighbours for the others), and the teacher labels every copy, so the student learns to match the
teacher on inputs near the data, not only on the training sentences themselves. A pruned student
that agrees with its teacher on nearly every training sentence but not on the dev set (the gap this
closes) is the case it is for.

Here the candidates are the nearest neighbours of a token in the dense model's own input word
embeddings (cosine similarity), which needs no masked-LM head and no download; substitutions are
token for token, so a copy keeps its length, padding and segment ids. Only *whole words* are
replaced or used as replacements (a task's :meth:`~profiler.tasks.base.Task.augment_vocab`: no
special tokens, no ``##`` continuation pieces), and a word's first piece is left alone when a
continuation piece follows it (``secret`` of ``secret ##ions``), where TinyBERT would look the
whole word up in GloVe.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch

#: the packaged GLUE sets whose training sentences ``distill_text`` may name (the task reads them:
#: :meth:`profiler.tasks.base.Task.unlabeled_texts`)
TEXT_SETS = ("sst2", "mrpc", "stsb")

#: TinyBERT's probability of replacing a word (p_t, Algorithm 1)
P_TOKEN = 0.4
#: TinyBERT's number of candidates per word (K)
K_NEIGHBOURS = 15
#: candidates whose similarities are computed at once (bounds the (chunk, candidates) float32 matrix)
_CHUNK = 2048


@torch.no_grad()
def nearest_neighbours(embeddings: torch.Tensor, candidates: Sequence[int], k: int = K_NEIGHBOURS) -> torch.Tensor:
    """``(V, k)`` int64 table: row ``i`` holds the ``k`` candidates nearest to token ``i`` by cosine
    similarity of ``embeddings`` rows (most similar first, ``i`` itself excluded) when ``i`` is a
    candidate, and ``-1`` everywhere else.

    Args:
        embeddings: ``(V, H)`` word-embedding matrix (any float dtype).
        candidates: token ids in ``[0, V)`` that may be replaced and may replace (duplicates ignored).
        k: neighbours per token, >= 1; ValueError if there are not ``k + 1`` distinct candidates.
    """
    V = embeddings.shape[0]
    ids = torch.as_tensor(sorted({int(c) for c in candidates}), dtype=torch.long)
    if k < 1 or ids.numel() < k + 1:
        raise ValueError(f"need k >= 1 and more than k candidates; got k={k}, {ids.numel()} candidates")
    if int(ids.min()) < 0 or int(ids.max()) >= V:
        raise ValueError(f"candidate ids must be in [0, {V})")
    e = torch.nn.functional.normalize(embeddings[ids].float(), dim=1)
    table = torch.full((V, k), -1, dtype=torch.long)
    for s in range(0, ids.numel(), _CHUNK):
        sim = e[s : s + _CHUNK] @ e.T  # (chunk, candidates)
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + s] = -float("inf")  # not itself
        table[ids[s : s + _CHUNK]] = ids[sim.topk(k, dim=1).indices]
    return table


class TokenAugmenter:
    """Replaces a share of a training batch by perturbed copies (module doc).

    Args:
        embeddings: ``(V, H)`` the dense model's input word embeddings.
        candidates: whole-word token ids (see :func:`nearest_neighbours`).
        fraction: probability that an example of a batch is replaced by a perturbed copy, in (0, 1].
        seed: seed of the draws (a ``torch.Generator`` of its own: the training's random stream is untouched).
        pieces: token ids that continue a word (``##…``): the token before one is never replaced.
        p_token, k: TinyBERT's ``p_t`` and ``K`` (at most the number of candidates − 1).

    Raises:
        ValueError: ``fraction`` or ``p_token`` out of range, or fewer than 2 candidates.
    """

    def __init__(self, embeddings: torch.Tensor, candidates: Sequence[int], fraction: float, seed: int = 0,
                 pieces: Sequence[int] = (), p_token: float = P_TOKEN, k: int = K_NEIGHBOURS) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"augment must be in (0, 1], got {fraction!r}")
        if not 0.0 < p_token <= 1.0:
            raise ValueError(f"p_token must be in (0, 1], got {p_token!r}")
        n = len({int(c) for c in candidates})
        if n < 2:
            raise ValueError(f"augment: the task's vocabulary has {n} whole-word token(s); a word needs a "
                             "neighbour to be swapped for (use augment = 0)")
        # a vocabulary smaller than K + 1 (a tiny test task) draws from all of its other words
        self.fraction, self.p_token, self.k = float(fraction), float(p_token), min(int(k), n - 1)
        self.table = nearest_neighbours(embeddings, candidates, self.k)
        self.n_candidates = int((self.table[:, 0] >= 0).sum())
        self.is_piece = torch.zeros(self.table.shape[0] + 1, dtype=torch.bool)  # last slot: ids outside the table
        self.is_piece[torch.as_tensor([int(i) for i in pieces if 0 <= int(i) < self.table.shape[0]], dtype=torch.long)] = True
        self.gen = torch.Generator().manual_seed(int(seed))
        self.examples = 0  # copies made
        self.tokens = 0  # tokens replaced in them

    def perturb(self, input_ids: Sequence[int]) -> list[int]:
        """A copy of ``input_ids`` with each candidate token replaced, with probability ``p_token``,
        by one of its ``k`` neighbours drawn uniformly; other tokens (special, ``##`` pieces, the
        first piece of a longer word, out-of-table ids) unchanged. Same length."""
        ids = torch.as_tensor(list(input_ids), dtype=torch.long)
        V = self.table.shape[0]
        inside = (ids >= 0) & (ids < V)
        nbr = self.table[ids.clamp(0, V - 1)]  # (len, k)
        slot = torch.where(inside, ids, torch.full_like(ids, V))
        before_piece = torch.cat([self.is_piece[slot[1:]], torch.zeros(1, dtype=torch.bool)])
        flip = inside & ~before_piece & (nbr[:, 0] >= 0) & (torch.rand(ids.numel(), generator=self.gen) < self.p_token)
        pick = torch.randint(self.k, (ids.numel(),), generator=self.gen)
        new = torch.where(flip, nbr[torch.arange(ids.numel()), pick], ids)
        self.tokens += int(flip.sum())
        return new.tolist()

    def batch(self, examples: Sequence) -> tuple[list, torch.Tensor]:
        """``(examples', augmented)``: each example (a :class:`profiler.tasks.base.Example`) kept or,
        with probability ``fraction``, replaced by a perturbed copy (its label is the original's and
        must not be trusted: the teacher labels the copy); ``augmented`` is a bool ``(batch,)`` tensor."""
        aug = torch.rand(len(examples), generator=self.gen) < self.fraction
        out = [dataclasses.replace(e, input_ids=self.perturb(e.input_ids)) if a else e for e, a in zip(examples, aug.tolist())]
        self.examples += int(aug.sum())
        return out, aug

    def state_dict(self) -> dict[str, Any]:
        """The generator's state and the counters, for a training checkpoint."""
        return {"gen": self.gen.get_state(), "examples": self.examples, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.examples, self.tokens = int(state["examples"]), int(state["tokens"])

    def describe(self) -> dict:
        return {"method": "word substitution by embedding neighbours (TinyBERT data augmentation)",
                "fraction": self.fraction, "p_token": self.p_token, "k_neighbours": self.k,
                "candidates": self.n_candidates, "examples_augmented": self.examples, "tokens_replaced": self.tokens}


class ExtraText:
    """Unlabeled text in the training batches, labelled by the teacher: each example of a batch is
    replaced, with probability ``fraction``, by one drawn at random from ``examples``.

    Distillation on a *transfer set* of unlabeled text (Turc et al. 2019, "Well-Read Students Learn
    Better", §3: the teacher's soft labels on unlabeled text beside the labelled task data; the
    general-distillation stage of TinyBERT, Jiao et al. 2020, §3.3, is the task-agnostic extreme):
    the student matches the teacher on text the task's training set does not hold, which is where a
    pruned student that copies its teacher on the training sentences but not on new ones misses.

    Args:
        examples: tokenized texts (:class:`profiler.tasks.base.Example`, labels unused), non-empty.
        fraction: share of each batch replaced, in (0, 1].
        seed: seed of the draws (a generator of its own: the training's RNG streams are untouched).
        sources: what ``examples`` came from, for :meth:`describe`.
    """

    def __init__(self, examples: Sequence, fraction: float, seed: int = 0, sources: Sequence[str] = ()):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"distill_text_share must be in (0, 1], got {fraction!r}")
        if not examples:
            raise ValueError("distill_text: no texts to distil on")
        self.pool = list(examples)
        self.fraction = float(fraction)
        self.sources = list(sources)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.examples = 0

    def batch(self, examples: Sequence) -> tuple[list, torch.Tensor]:
        """``(examples', extra)``: each example kept or, with probability ``fraction``, replaced by a
        random text of the pool (label untrusted: the teacher labels it); ``extra`` is a bool
        ``(batch,)`` tensor, the interface of :meth:`TokenAugmenter.batch`."""
        extra = torch.rand(len(examples), generator=self.gen) < self.fraction
        picks = torch.randint(len(self.pool), (len(examples),), generator=self.gen).tolist()
        out = [self.pool[j] if x else e for e, x, j in zip(examples, extra.tolist(), picks)]
        self.examples += int(extra.sum())
        return out, extra

    def state_dict(self) -> dict[str, Any]:
        """The generator's state and the counter, for a training checkpoint."""
        return {"gen": self.gen.get_state(), "examples": self.examples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.examples = int(state["examples"])

    def describe(self) -> dict:
        return {"method": "unlabeled text labelled by the teacher (transfer-set distillation)",
                "sources": self.sources, "fraction": self.fraction, "texts": len(self.pool),
                "examples_drawn": self.examples}


def check_text_source(source: str, key: str = "") -> None:
    """ValueError unless ``source`` is a name of :data:`TEXT_SETS` (a packaged GLUE set's training
    sentences) or an existing ``.txt`` file (one text per line; a pair task: one tab-separated pair);
    the message starts with ``key`` when given. The one check of a text source, for the pruners'
    ``distill_text`` and the tasks' readers alike."""
    if source in TEXT_SETS:
        return
    where = f"{key}: " if key else ""
    if Path(source).suffix.lower() != ".txt":
        raise ValueError(f"{where}text source {source!r}: use one of {', '.join(TEXT_SETS)} (the packaged GLUE "
                         "training sentences) or a .txt file with one text per line (a pair task: one "
                         "tab-separated pair)")
    if not Path(source).is_file():
        raise ValueError(f"{where}text source {source!r}: the file does not exist")


def check_text_sources(sources: Any, key: str = "distill_text") -> tuple[str, ...]:
    """``sources`` as a tuple, each checked by :func:`check_text_source`; ValueError naming ``key``
    for anything else, before any work."""
    if isinstance(sources, str) or not all(isinstance(s, str) for s in sources):
        raise ValueError(f"{key} must be a list of text sources, got {sources!r}")
    for src in sources:
        check_text_source(src, key)
    return tuple(sources)


def text_source_digest(source: str) -> str | None:
    """sha256 of a ``.txt`` source's bytes; None for a packaged set (it ships with the package)."""
    return None if source in TEXT_SETS else hashlib.sha256(Path(source).read_bytes()).hexdigest()
