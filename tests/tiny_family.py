"""Tiny random-weight BERT-family models built in code (no downloads): saved as transformers folders
with a tokenizer for the text-classification, API and export tests, and held in memory, magnitude-pruned,
for the sparse-swap tests."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["good", "bad", "great", "awful", "movie", "plot", "the", "a", "is", "was", "not", "very", "fun", "dull",
         "actor", "story", "and", "but", "it", "this"]
SPECIALS_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")
#: sizes where 90 % of every encoder weight matrix is a whole number of entries (exact sparsity)
HIDDEN, FFN, LAYERS, HEADS = 40, 80, 2, 4


def _wordpiece_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS_BERT + WORDS + ["##s", "##ly"]) + "\n")
    # from the folder: transformers 5 ignores vocab_file= here (every word then maps to [UNK])
    tok = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    if len(tok) < len(WORDS):
        raise RuntimeError(f"the tiny WordPiece tokenizer did not load its vocabulary ({len(tok)} tokens)")
    return tok


def _bpe_tokenizer(folder: Path):
    """A byte-level-free BPE over whole words (RoBERTa/XLM-R specials: <s> </s> <pad> <unk>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS + list("abcdefghijklmnopqrstuvwxyz"))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def _config(arch: str, vocab_size: int, num_labels: int):
    import transformers as T

    common = dict(vocab_size=vocab_size, max_position_embeddings=160, num_labels=num_labels)
    bert_like = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN)
    if arch == "distilbert":
        return T.DistilBertConfig(dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, **common)
    if arch == "roberta":
        return T.RobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **bert_like, **common)
    if arch == "xlm-roberta":
        return T.XLMRobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **bert_like, **common)
    if arch == "electra":
        return T.ElectraConfig(embedding_size=24, **bert_like, **common)
    return T.BertConfig(**bert_like, **common)


def save_tiny_model(folder: Path, arch: str = "bert", num_labels: int = 2, seed: int = 0, head_scale: float = 20.0) -> Path:
    """Save a random ``arch`` sequence-classification model and its tokenizer into ``folder``.

    ``head_scale`` multiplies the classifier's weights so random logits have clear margins (INT8
    and bf16 then keep every prediction). Returns ``folder``.
    """
    from transformers import AutoModelForSequenceClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _bpe_tokenizer(folder) if arch in ("roberta", "xlm-roberta") else _wordpiece_tokenizer(folder)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(_config(arch, len(tok), num_labels)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("classifier") and name.endswith("weight"):
                p.mul_(head_scale)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def tiny_bert(sparsity: float, seed: int = 0):
    """A 2-layer, hidden-64 ``BertForSequenceClassification`` in eval mode, every encoder Linear's weight
    magnitude-pruned to ``sparsity`` (fraction of zeros per matrix, unstructured; 0 leaves it dense)."""
    import transformers

    from accelerators.sparse_cpu import encoder_linears

    cfg = transformers.BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=256, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(cfg).eval()
    if sparsity > 0:
        with torch.no_grad():
            for _, lin in encoder_linears(model):
                w = lin.weight
                w.mul_(w.abs() > w.abs().flatten().kthvalue(max(1, int(sparsity * w.numel()))).values)
    return model


def tiny_inputs(batch: int = 2, seq: int = 16) -> dict[str, torch.Tensor]:
    """Fixed random ``tiny_bert`` inputs: int64 ``input_ids`` of shape (batch, seq), no padding."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 120, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def sentences(n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """``n`` (sentence, second sentence, 0/1 label) triples from :data:`WORDS`, fixed by ``seed``."""
    import random

    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS, k=rng.randint(3, 12))), " ".join(rng.choices(WORDS, k=rng.randint(3, 8))), i % 2)
            for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
