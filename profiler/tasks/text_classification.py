"""``text-classification``: any supported BERT-family model on any labelled text.

The model is a local transformers folder, a hub id in the local cache, or the packaged
all-MiniLM-L6-v2 (:mod:`profiler.tasks.modelsource`); the data a packaged GLUE set (SST-2, MRPC,
STS-B) or the user's CSV / TSV / JSONL files (:mod:`profiler.tasks.textdata`). Everything that can
be wrong with them (missing files or columns, labels outside the head, a regression metric on a
classification head, an unsupported architecture) raises ValueError in the constructor, i.e. when
the config is validated, before any model is built.
"""
from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from profiler.tasks import modelsource, textdata
from profiler.tasks.base import Example, FinetuneBatch, FinetuneLR, FinetunePrecision, FinetuneSteps, MaxLength, Seed, Task


class TextClassification(Task):
    """Sequence classification or regression on labelled text, with the metric of your choice.

    Args:
        model: local model folder (config, weights, tokenizer), hub id (only from the local cache,
            or when the hub is reachable), or None for the packaged all-MiniLM-L6-v2.
        glue: ``"sst2"``, ``"mrpc"`` or ``"stsb"``: the packaged GLUE train/dev split (columns
            and metric preset). Exclusive with ``eval_file``.
        train_file / eval_file: ``.csv``, ``.tsv`` (quoting off) or ``.jsonl`` files; train only
            needed for fine-tuning and training pruners.
        text_column / text_pair_column / label_column: column names (default ``text`` / none /
            ``label``; GLUE presets name their own).
        metric: ``accuracy``, ``f1``, ``matthews`` (class labels) or ``pearson``, ``spearman``
            (one regression output); default: the GLUE preset's, else pearson for a model with a
            regression head (num_labels = 1), else accuracy. The headline goes
            in the row's ``accuracy``; accuracy (beside f1 / matthews) or the other correlation is
            reported too, every metric as ``metric_<name>``.
        finetune_steps: 0 = use the model as given (it must have its classification head);
            otherwise fine-tune (AdamW, linear warm-up/decay) and cache the result.
        finetune_batch_size, finetune_lr, seed, max_length: fine-tuning and tokenization.
        data_dir: folder with the GLUE ``train.tsv``/``dev.tsv``; default: the packaged copy. Only
            with ``glue`` (ValueError otherwise).
        finetune_precision: ``auto`` (bf16 autocast with fp32 master weights where the CPU has
            native bf16, else fp32), ``fp32`` or ``bf16``; see :mod:`pruners.training`.
    """

    name = "text-classification"

    #: what each parameter left out means (``sparsebench plugins`` shows it)
    when_omitted: ClassVar[dict[str, str]] = {
        "model": "all-MiniLM-L6-v2 (packaged)", "glue": "your own files (eval_file)",
        "train_file": "none (no fine-tuning, no training pruner)", "eval_file": "the glue preset's dev split",
        "text_column": '"text" (a glue preset: its own)', "text_pair_column": "single sentences",
        "label_column": '"label" (a glue preset: its own)', "metric": '"accuracy" (a glue preset: its headline)',
        "data_dir": "the packaged GLUE data",
    }

    def __init__(
        self,
        model: str | None = None,
        glue: textdata.GlueTask | None = None,
        train_file: str | None = None,
        eval_file: str | None = None,
        text_column: str | None = None,
        text_pair_column: str | None = None,
        label_column: str | None = None,
        metric: textdata.Metric | None = None,
        finetune_steps: FinetuneSteps = 0,
        finetune_batch_size: FinetuneBatch = 32,
        finetune_lr: FinetuneLR = 5e-5,
        seed: Seed = 0,
        max_length: MaxLength = 128,
        data_dir: str | None = None,
        finetune_precision: FinetunePrecision = "auto",
    ) -> None:
        self.set_finetuning(finetune_steps, finetune_batch_size, finetune_lr, seed, max_length, finetune_precision)
        self.model_arg, self.glue = model, glue
        self._data_source(glue, train_file, eval_file, data_dir, (text_column, text_pair_column, label_column))
        self._pick_metric(metric)
        self.model_path = modelsource.resolve_model(model)
        self._check_model(metric_given=metric is not None or glue is not None)
        self._read_data()
        self._check_tokenizes()

    # ---- construction-time checks -------------------------------------------------------------
    def _data_source(self, glue: str | None, train_file: str | None, eval_file: str | None, data_dir: str | None,
                     columns: tuple[str | None, str | None, str | None]) -> None:
        """Set the data files and (text, pair, label) columns: a GLUE preset's or the user's."""
        if glue is not None:
            if glue not in textdata.GLUE:
                raise ValueError(f"glue: unknown GLUE task {glue!r}; packaged: {', '.join(textdata.GLUE)}")
            if eval_file or train_file or any(columns):
                raise ValueError("glue: give either glue or train_file/eval_file with their columns, not both")
            folder = Path(data_dir) if data_dir else textdata.packaged_glue_dir(glue)
            self.train_path, self.eval_path = folder / "train.tsv", folder / "dev.tsv"
            for f in (self.train_path, self.eval_path):
                if not f.is_file():
                    raise ValueError(f"data_dir: missing data file {f}")
            p = textdata.GLUE[glue]
            self.text_column, self.text_pair_column, self.label_column = p.text_column, p.text_pair_column, p.label_column
            return
        if data_dir is not None:  # it would be ignored, yet still change the cell ids
            raise ValueError("data_dir: applies to glue only (the folder of its train.tsv/dev.tsv); "
                             "use train_file/eval_file for your own files")
        if not eval_file:
            raise ValueError(f"give glue = {' | '.join(map(repr, textdata.GLUE))}, or eval_file (and train_file to fine-tune)")
        self.train_path = Path(train_file) if train_file else None
        self.eval_path = Path(eval_file)
        self.text_column = columns[0] or "text"
        self.text_pair_column = columns[1]
        self.label_column = columns[2] or "label"

    def _pick_metric(self, metric: str | None) -> None:
        preset = textdata.GLUE.get(self.glue or "")
        self.metric_name = metric or (preset.metric if preset else "accuracy")
        if self.metric_name not in textdata.METRICS:
            raise ValueError(f"metric: unknown metric {self.metric_name!r}; valid: {', '.join(textdata.METRICS)}")
        self.regression = textdata.METRICS[self.metric_name]
        # reported beside the headline: the GLUE preset's companion, else accuracy / the other correlation
        if preset and self.metric_name == preset.metric:
            also = preset.also
        else:
            also = ("pearson", "spearman") if self.regression else ("accuracy",)
        self.also_metrics = tuple(m for m in also if m != self.metric_name)

    def _check_model(self, metric_given: bool = True) -> None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.model_path)
        except Exception as exc:  # bad JSON, a "num_labels": "2" (TypeError), no model_type: the folder's fault
            raise ValueError(f"model: {self.model_path}: cannot read its config.json ({type(exc).__name__}: {exc}); "
                             "save it again (model.save_pretrained(folder))") from None
        self.model_type = modelsource.check_architecture(config)
        self.has_head = modelsource.has_classification_head(config)
        self.uses_token_types = getattr(config, "type_vocab_size", 0) > 0
        self.pair_token_types = getattr(config, "type_vocab_size", 0) > 1
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if positions and self.model_type in ("roberta", "xlm-roberta"):
            positions -= int(getattr(config, "pad_token_id", 1) or 1) + 1  # positions start after the padding index
        self.max_positions = int(positions) if positions else None
        labels = dict(getattr(config, "label2id", None) or {})
        self.label2id = {k: int(v) for k, v in labels.items()}  # LABEL_0 ... too: what pipelines answer
        if self.has_head:
            self.num_labels = int(config.num_labels)
            if not metric_given and self.num_labels == 1:  # a regression head: the default fits it
                self._pick_metric("pearson")
            if self.regression != (self.num_labels == 1):
                want = "a regression head (num_labels = 1)" if self.regression else "a classification head (num_labels >= 2)"
                raise ValueError(f"metric: {self.metric_name!r} needs {want}; the model's head has num_labels = {self.num_labels}")
        elif self.finetune_steps == 0:
            raise ValueError(f"model: {self.model_path} has no sequence-classification head; set finetune_steps > 0 "
                             "to train one, or give a fine-tuned model")
        else:  # a new head: the config's label names (transformers' LABEL_0, LABEL_1 defaults) name none of its classes
            self.label2id = {}
        modelsource.check_weights_match_config(self.model_path, config, self.has_head)
        try:
            _ = self.tokenizer  # its first load: a damaged tokenizer.json is a JSONDecodeError naming no file
        except Exception as exc:
            files = ", ".join(modelsource.tokenizer_files(self.model_path)) or "none found"
            raise ValueError(f"model: {self.model_path}: cannot read its tokenizer files ({files}) "
                             f"({type(exc).__name__}: {exc}); save them again (tokenizer.save_pretrained(folder))") from None
        self._check_vocabulary(config)

    def _check_vocabulary(self, config) -> None:
        """ValueError when the tokenizer's ids reach past the model's word embeddings (a tokenizer
        saved with another model): every cell would fail with an index error in the embedding."""
        vocab = getattr(config, "vocab_size", None)
        if vocab and len(self.tokenizer) > int(vocab):
            raise ValueError(f"model: the tokenizer in {self.model_path} has {len(self.tokenizer)} tokens, but the "
                             f"model's word embedding has {vocab} rows (config vocab_size): save the tokenizer the "
                             "model was trained with (tokenizer.save_pretrained(folder))")

    def _check_tokenizes(self) -> None:
        """ValueError naming the model folder when its tokenizer cannot tokenize the first eval example
        (a vocab.txt without ``[UNK]`` loads, then fails on every text): every cell would fail alike."""
        texts, pairs, labels = self._raw["eval"]
        try:
            self._tokenize(texts[:1], pairs[:1] if pairs is not None else None, labels[:1])
        except Exception as exc:
            raise ValueError(f"model: the tokenizer in {self.model_path} cannot tokenize the first text of "
                             f"{self.eval_path} ({type(exc).__name__}: {exc}); save the tokenizer the model was "
                             "trained with (tokenizer.save_pretrained(folder))") from None

    def _read_data(self) -> None:
        """Read, check and keep the raw rows (texts and parsed labels); tokenized lazily."""
        self._raw: dict[str, tuple[list[str], list[str] | None, list[float]]] = {}
        for split, path in (("eval", self.eval_path), ("train", self.train_path)):
            if path is None:
                continue
            try:
                rows = textdata.read_rows(path)
            except ValueError as exc:
                raise ValueError(f"{split}_file: {exc}") from None
            textdata.check_columns(rows, (self.text_column, self.text_pair_column, self.label_column), str(path))
            lines = textdata.row_lines(rows)
            try:
                labels = textdata.parse_labels([r[self.label_column] for r in rows], self.regression, self.label2id,
                                               str(path), lines)
            except ValueError as exc:
                if self.regression or self.has_head:
                    raise
                raise ValueError(f"{exc}: a new head learns classes 0, 1, ...; for a score (regression), set "
                                 "metric = \"pearson\" or \"spearman\"") from None
            texts = textdata.parse_texts([r[self.text_column] for r in rows], "text_column", self.text_column,
                                         str(path), lines)
            pairs = (textdata.parse_texts([r[self.text_pair_column] for r in rows], "text_pair_column",
                                          self.text_pair_column, str(path), lines) if self.text_pair_column else None)
            self._raw[split] = (texts, pairs, labels)
        if self.finetune_steps > 0 and "train" not in self._raw:
            raise ValueError("finetune_steps > 0 needs train_file")
        if not self.regression:
            if not self.has_head:
                self.num_labels = max(2, 1 + int(max(max(v[2]) for v in self._raw.values())))
                if self.finetune_steps > 0:  # (train_file is there: checked above)
                    # a class the new head never sees in training would still widen it and be scored
                    unseen = sorted({int(x) for x in self._raw["eval"][2]} - {int(x) for x in self._raw["train"][2]})
                    if unseen:
                        raise ValueError(f"{self.eval_path}: labels {unseen[:10]} never occur in {self.train_path}: "
                                         "the new head would learn no class for them; use a training set that holds "
                                         "every class")
            if self.metric_name in ("f1", "matthews") and self.num_labels != 2:
                raise ValueError(f"metric: {self.metric_name!r} is binary; the head has {self.num_labels} labels (use accuracy)")
            for split, (_, _, labels) in self._raw.items():
                where = str(self.eval_path if split == "eval" else self.train_path)
                textdata.check_label_range(labels, self.num_labels, where)
        elif not self.has_head:
            self.num_labels = 1

    # ---- Task hooks -----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        files = {s: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
                 for s, p in (("train", self.train_path), ("eval", self.eval_path)) if p is not None}
        return {
            "task": self.name, "model": self.model_arg or "all-MiniLM-L6-v2",
            "model_files": modelsource.folder_fingerprint(self.model_path), "data": files,
            "columns": [self.text_column, self.text_pair_column, self.label_column], "metric": self.metric_name,
            "num_labels": self.num_labels, "steps": self.finetune_steps, "batch": self.finetune_batch_size,
            "lr": self.finetune_lr, "seed": self.seed, "max_length": self.max_length, **self.precision_fingerprint(),
        }

    def model_fingerprint(self) -> dict[str, Any]:
        """:meth:`fingerprint` without the eval file's digest and the metric, which only evaluation
        reads; with whether the head is a regression head (the metric decided it there), which
        training reads."""
        out = self.fingerprint()
        out["data"] = {k: v for k, v in out["data"].items() if k != "eval"}
        del out["metric"]
        return {**out, "regression": self.regression}

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_path)

    @property
    def pad_id(self) -> int:  # type: ignore[override]
        return int(self.tokenizer.pad_token_id or 0)

    def base_model(self) -> nn.Module:
        """The model as saved (``has_head``), or the encoder with a new head of ``num_labels`` outputs
        initialised from ``seed``."""
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging

        if self.has_head:
            return self.load_saved(self.model_path)
        torch.manual_seed(self.seed)
        extra = {"problem_type": "regression"} if self.regression else {}
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                self.model_path, num_labels=self.num_labels, output_loading_info=True, **extra)
        finally:
            logging.set_verbosity(verbosity)
        # .bin weights skip the config-time shape check: an encoder tensor left at random fails here
        random = sorted(k for k in info.get("missing_keys", ()) if modelsource.must_load(k, model.base_model_prefix, False))
        if random:
            raise RuntimeError(f"model {self.model_path}: its weights lack {len(random)} tensor(s) of the encoder "
                               f"config.json describes, e.g. {', '.join(random[:3])}; transformers would leave "
                               "them at random (check num_hidden_layers, or save the model again)")
        return model.float()  # as load_saved

    def _encode(self, split: str) -> list[Example]:
        return self._tokenize(*self._raw[split])

    def _tokenize(self, texts: list[str], pairs: list[str] | None, labels: list) -> list[Example]:
        """Examples of ``texts`` (with their second segments ``pairs``, or None), truncated to ``max_length``."""
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        types = enc.get("token_type_ids") if self.pair_token_types and pairs is not None else None
        return [Example(ids, lab, types[i] if types is not None else None)
                for i, (ids, lab) in enumerate(zip(enc["input_ids"], labels))]

    def has_training_data(self) -> bool:
        return "train" in self._raw

    @cached_property
    def _train(self) -> list[Example]:
        if "train" not in self._raw:
            raise ValueError(f"task {self.name!r}: no training data (give train_file) for fine-tuning or a training pruner")
        return self._encode("train")

    @cached_property
    def _eval(self) -> list[Example]:
        return self._encode("eval")

    def train_examples(self) -> list[Example]:
        return self._train

    def eval_examples(self) -> list[Example]:
        return self._eval

    def unlabeled_texts(self, source: str) -> list[str] | list[tuple[str, str]]:
        """A ``distill_text`` source's distinct texts; for a sentence-pair task its pairs
        (:func:`textdata.unlabeled_pairs`), so the student sees them as two segments, as it is trained."""
        return textdata.unlabeled_pairs(source) if self.text_pair_column else textdata.unlabeled_texts(source)

    def encode_texts(self, texts: list[str] | list[tuple[str, str]]) -> list[Example]:
        """``texts`` (or ``(first, second)`` pairs, as the task's own examples) tokenized one by one,
        truncated to ``max_length``, label 0."""
        items = list(texts)
        if items and isinstance(items[0], tuple):
            return self._tokenize([a for a, _ in items], [b for _, b in items], [0] * len(items))
        return self._tokenize(items, None, [0] * len(items))

    def augment_vocab(self) -> tuple[list[int], list[int]]:
        """The tokenizer's alphabetic whole-word tokens (no special tokens) and its ``##`` pieces."""
        special, vocab = set(self.tokenizer.all_special_ids), self.tokenizer.get_vocab()
        return (sorted(i for t, i in vocab.items() if t.isalpha() and i not in special),
                sorted(i for t, i in vocab.items() if t.startswith("##")))

    def calibration_examples(self) -> list[Example]:
        """The training examples, or the eval examples when there is no training data."""
        return self.train_examples() if "train" in self._raw else self.eval_examples()

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return textdata.compute_metric(self.metric_name, logits, labels)

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {m: textdata.compute_metric(m, logits, labels) for m in (self.metric_name, *self.also_metrics)}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        return nn.functional.cross_entropy(logits, labels.long())
