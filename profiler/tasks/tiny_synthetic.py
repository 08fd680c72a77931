"""A tiny BERT built in code with a learnable synthetic task: for tests and smoke runs."""
from __future__ import annotations

import random
from functools import cached_property
from typing import Annotated, Any

import torch
from torch import nn

from accelerators.params import Range
from profiler.tasks.base import Example, FinetuneBatch, FinetuneLR, FinetunePrecision, FinetuneSteps, Seed, Task

MARKER_TOKEN = 7


class TinySynthetic(Task):
    """Binary task: label 1 iff the sequence contains the marker token. Model: a randomly
    initialised BERT (config in code, no download) fine-tuned for a few seconds.

    Args:
        hidden_size, num_layers, num_heads, intermediate_size: BERT shape.
        vocab_size: token ids drawn from [10, vocab_size); ids < 10 are special.
        n_train, n_eval: examples in each split (fixed by ``seed``).
        finetune_steps, finetune_batch_size, finetune_lr, seed: fine-tuning budget.
        finetune_precision: ``auto`` | ``fp32`` | ``bf16`` (see :mod:`pruners.training`).
    """

    name = "tiny-synthetic"

    def __init__(
        self,
        hidden_size: Annotated[int, Range(1, 4096)] = 64,
        num_layers: Annotated[int, Range(1, 48)] = 2,
        num_heads: Annotated[int, Range(1, 64)] = 4,
        intermediate_size: Annotated[int, Range(1, 16384)] = 256,
        vocab_size: Annotated[int, Range(21, 250_000)] = 200,
        n_train: Annotated[int, Range(1, 1_000_000)] = 2000,
        n_eval: Annotated[int, Range(1, 1_000_000)] = 256,
        finetune_steps: FinetuneSteps = 150,
        finetune_batch_size: FinetuneBatch = 32,
        finetune_lr: FinetuneLR = 2e-3,
        seed: Seed = 0,
        finetune_precision: FinetunePrecision = "auto",
    ) -> None:
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
        self.hidden_size, self.num_layers, self.num_heads = hidden_size, num_layers, num_heads
        self.intermediate_size, self.vocab_size = intermediate_size, vocab_size
        self.n_train, self.n_eval = n_train, n_eval
        self.set_finetuning(finetune_steps, finetune_batch_size, finetune_lr, seed, max_length=128, precision=finetune_precision)

    def fingerprint(self) -> dict[str, Any]:
        own = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("finetune_precision", "finetune_report")}
        return {"task": self.name, **own, **self.precision_fingerprint()}

    def base_model(self) -> nn.Module:
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(self.seed)
        cfg = BertConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=512, num_labels=2,
        )
        return BertForSequenceClassification(cfg)

    def _make(self, n: int, salt: int) -> list[Example]:
        rng = random.Random(self.seed * 1000 + salt)
        out = []
        for i in range(n):
            length = rng.randint(8, 32)
            ids = [rng.randrange(10, self.vocab_size) for _ in range(length)]
            label = i % 2
            if label:
                ids[rng.randrange(1, length - 1)] = MARKER_TOKEN
            out.append(Example([1] + ids + [2], label))
        return out

    @cached_property
    def _train(self) -> list[Example]:
        return self._make(self.n_train, 1)

    @cached_property
    def _eval(self) -> list[Example]:
        return self._make(self.n_eval, 2)

    def train_examples(self) -> list[Example]:
        return self._train

    def eval_examples(self) -> list[Example]:
        return self._eval

    def augment_vocab(self) -> tuple[list[int], list[int]]:
        """Every non-special id is a word (the marker included: the teacher labels the copies); no pieces."""
        return list(range(10, self.vocab_size)), []
