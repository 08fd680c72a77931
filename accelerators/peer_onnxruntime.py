"""ONNX Runtime on the CPU: the other engine a user would pick instead of our kernels.

Named ``peer_onnxruntime`` (not ``onnxruntime``) so that no ``sys.path`` layout can make this
module shadow the ``onnxruntime`` package it imports.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Literal, get_args

import torch
from torch import nn

from accelerators.base import Accelerator, PrepareSettings, Prepared
from accelerators.peer_common import LogitsOnly, PeerModule, import_status, input_names, quiet_trace

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
OPSET = 17
#: what ``quant_method`` records; ``{per_channel}`` is the accelerator's parameter
QUANT_METHOD = "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, per_channel={per_channel})"
#: node types that compute on INT8 data after quantize_dynamic
INT8_OPS = frozenset({"MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "QGemm", "QEmbedLayerNormalization"})



class _PreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def without_preprocess_hint() -> Iterator[None]:
    """Drop the root-logger line ``quantize_dynamic`` prints for every model ("Please consider to
    run pre-processing before quantization"): the model it gets is already optimised
    (:func:`accelerators.peer_common.optimized_onnx`). Other log lines pass."""
    hint = _PreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


class ONNXRuntime(Accelerator):
    """ONNX Runtime CPU execution provider: ``torch.onnx.export`` (batch and sequence dynamic),
    the transformers graph optimizer for BERT-family models (fused attention, embedding and
    skip LayerNorm, bias GELU), sequential execution with ``intra_op_num_threads`` = the cell's
    threads and one inter-op thread.

    Args:
        precision: ``"fp32"`` or ``"int8"`` (dynamic quantization of the optimized graph: INT8
            weights, activations quantized per call with one scale per tensor).
        per_channel: INT8 weights with one scale per output channel instead of one per tensor
            (``quantize_dynamic``'s own option, off by default as in ONNX Runtime): closer to fp32
            accuracy (+0.81 points on MiniLM / SST-2, no measurable speed cost on AMD Zen 3:
            docs/results.md); ``int8`` only.
    """

    name = "onnxruntime"
    #: added after ONNX Runtime cells had results: at its default it stays out of their keys
    late_params = ("per_channel",)

    def __init__(self, precision: Precision = "fp32", per_channel: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of: {', '.join(PRECISIONS)} (got {precision!r})")
        if not isinstance(per_channel, bool):
            raise ValueError(f"per_channel must be true or false, got {per_channel!r}")
        if per_channel and precision != "int8":
            raise ValueError(f"per_channel = true applies to precision = \"int8\" only (got precision = {precision!r})")
        self.precision = self.compute_precision = precision
        self.per_channel = per_channel
        # quantize_dynamic's DynamicQuantizeLinear takes one activation scale per tensor, pad positions included
        self.padding_sensitive = precision == "int8"

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        return import_status("onnxruntime", "onnx")

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        """Export, optimize, (quantize,) load into one session. ``example``: int64 (batch, seq)
        tensors used for tracing only; the session takes any (batch, seq). ``model`` needs a
        transformers ``config`` (attention heads, hidden size). Raises RuntimeError when onnxruntime
        or onnx is missing, ValueError for a model without a config."""
        ok, why = self.availability(settings)
        if not ok:
            raise RuntimeError(f"onnxruntime accelerator unavailable: {why}")
        import onnx
        import onnxruntime as ort

        names = input_names(model, example)
        with tempfile.TemporaryDirectory(prefix="sparsebench-ort-") as tmp:
            path, fused = optimized_onnx(model, example, names, Path(tmp))
            if self.precision == "int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantized = Path(tmp) / "model-int8.onnx"
                # the fused nodes are contrib ops onnx's shape inference cannot type: their tensors are float
                with without_preprocess_hint():
                    quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, per_channel=self.per_channel,
                                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                path = quantized
            blob = path.read_bytes()
        ops = Counter(node.op_type for node in onnx.load_from_string(blob).graph.node)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(settings.threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        output = session.get_outputs()[0].name

        def run(feeds):
            return session.run([output], feeds)[0]

        fields: dict[str, Any] = {
            "peer_engine": "onnxruntime", "peer_version": ort.__version__, "peer_precision": self.precision,
            "inference_precision": "f32" if self.precision == "fp32" else "int8-dynamic",
            "peer_threads": session.get_session_options().intra_op_num_threads,
            "ort_fused_ops": ",".join(f"{k}:{v}" for k, v in sorted(fused.items()) if v),
            "int8_ops": sum(n for op, n in ops.items() if op in INT8_OPS),
        }
        if self.precision == "int8":
            fields["quant_method"] = QUANT_METHOD.format(per_channel=self.per_channel)
        return Prepared(PeerModule(names, run, blob), fields)


def optimized_onnx(model: nn.Module, example: dict[str, torch.Tensor], names: list[str], folder: Path) -> tuple[Path, dict[str, int]]:
    """Export ``model``'s logits to ONNX in ``folder`` and run the transformers optimizer on it.

    The export traces a deep copy with eager attention (the optimizer's attention fusion matches
    that pattern, not SDPA's); ``model`` is untouched. Returns the optimized file and the
    optimizer's fused-operator counts. Raises ValueError when the model has no transformers config.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        raise ValueError("onnxruntime: the model needs a transformers config (num_attention_heads, hidden_size)")
    twin = copy.deepcopy(model).eval()
    if hasattr(twin, "set_attn_implementation"):
        twin.set_attn_implementation("eager")
    raw, optimized = folder / "model.onnx", folder / "model-opt.onnx"
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    with quiet_trace(), torch.no_grad():
        torch.onnx.export(
            LogitsOnly(twin), tuple(example[n] for n in names), str(raw), dynamo=False, opset_version=OPSET,
            input_names=names, output_names=["logits"], dynamic_axes={**dynamic, "logits": {0: "batch"}},
        )
        opt = optimize_model(str(raw), model_type="bert", num_heads=int(config.num_attention_heads),
                             hidden_size=int(config.hidden_size))
    opt.save_model_to_file(str(optimized))
    return optimized, dict(opt.get_fused_operator_statistics())
