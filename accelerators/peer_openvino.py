"""OpenVINO on the CPU: the engine a user would pick instead of our kernels, in the same matrix.

Named ``peer_openvino`` (not ``openvino``) so that no ``sys.path`` layout can make this module
shadow the ``openvino`` package it imports.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from accelerators.base import Accelerator, PrepareSettings, Prepared, cpu_flags
from accelerators.params import Range, check_ranges
from accelerators.peer_common import (
    LogitsOnly, PeerModule, arrays_digest, cache_root, calibration_batches, import_status, input_names,
    quiet_trace, weights_digest,
)

#: INFERENCE_PRECISION_HINT per precision. int8 sets none: its non-quantized ops (softmax, the
#: attention products NNCF leaves in float, LayerNorm) run at OpenVINO's default, bf16 where the CPU
#: has it (AVX512_BF16, AMX), as a user of OpenVINO INT8 gets them; forcing f32 there would make
#: the peer slower than it is. The row's ``inference_precision`` reads back what ran.
PRECISION_HINTS: dict[str, str | None] = {"fp32": "f32", "bf16": "bf16", "int8": None}
#: ``precision``'s choices, made from the keys above (see profiler.registry.choices). bf16 needs a
#: CPU with it: ``availability`` says so, the config stays valid on any machine
Precision = Literal[tuple(PRECISION_HINTS)]
PRECISIONS: tuple[str, ...] = get_args(Precision)
QUANT_METHOD = "nncf.quantize(model_type=TRANSFORMER), default preset, on the dynamic-shape IR"


class OpenVINO(Accelerator):
    """OpenVINO CPU plugin: ``openvino.convert_model`` from torch, compiled for the cell's static
    (batch, seq) shape with one stream, the latency hint and ``INFERENCE_NUM_THREADS`` = the
    cell's threads.

    Args:
        precision: ``"fp32"`` (f32 precision hint set explicitly), ``"bf16"`` (needs AVX512_BF16
            or AMX), or ``"int8"`` (NNCF post-training quantization calibrated on the task's
            training examples, cached on disk by a hash of the weights, the calibration data and
            the engine versions).
        sparse_weights_rate: OpenVINO's CPU sparse-weights decompression threshold in [0, 1]
            (``CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE``: a layer whose INT8 weights hold at least
            this fraction of zeros may use a sparse kernel); int8 only; None = off. The row's
            ``sparse_primitive_executed`` says whether a sparse kernel was actually chosen.
        calibration_samples: training examples NNCF calibrates on (int8 only).
    """

    name = "openvino"

    def __init__(self, precision: Precision = "fp32", sparse_weights_rate: Annotated[float | None, Range(0.0, 1.0)] = None,
                 calibration_samples: Annotated[int, Range(1, 100_000)] = 300) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of: {', '.join(PRECISIONS)} (got {precision!r})")
        check_ranges(OpenVINO.__init__, {"sparse_weights_rate": sparse_weights_rate,
                                         "calibration_samples": calibration_samples})
        if sparse_weights_rate is not None and precision != "int8":
            raise ValueError("sparse_weights_rate applies to INT8 weights only: set precision = \"int8\"")
        self.precision = precision
        self.compute_precision = precision
        self.sparse_weights_rate = sparse_weights_rate
        self.calibration_samples = calibration_samples

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        ok, why = import_status("openvino", *(("nncf",) if self.precision == "int8" else ()))
        if not ok:
            return False, why
        if self.precision == "bf16":
            try:
                import openvino as ov

                caps = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            except Exception as exc:
                return False, f"OpenVINO CPU plugin unusable: {type(exc).__name__}: {exc}"
            if "BF16" not in caps:
                return False, f"bf16: this CPU has neither AVX512_BF16 nor AMX-BF16 (OpenVINO CPU capabilities: {', '.join(caps)})"
        if self.precision == "int8" and settings is not None and settings.calibration is None:
            return False, "int8 needs calibration data (PrepareSettings.calibration is None)"
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        """Convert, (quantize,) compile. ``example``: int64 (batch, seq) tensors; the compiled model
        is static at that shape. Returns a :class:`PeerModule` whose other shapes run a
        dynamic-shape compilation of the same IR, built on first use (dense kernels: sparse-weights
        decompression changes no value). Raises RuntimeError when unavailable (missing package, no
        bf16, int8 without calibration data) or when OpenVINO dies compiling the sparse-weights
        kernel for this shape (probed in a child process, see :func:`probe_compile`)."""
        ok, why = self.availability(settings)
        if not ok:
            raise RuntimeError(f"openvino accelerator unavailable: {why}")
        import openvino as ov

        names = input_names(model, example)
        batch, seq = (int(d) for d in example["input_ids"].shape)
        fields: dict[str, Any] = {}
        if self.precision == "int8":
            ov_model, folder, fields = self._quantized(model, example, names, settings)
        else:
            ov_model = convert(model, example, names)
        config = self.compile_config(settings)
        if self.sparse_weights_rate is not None and "amx_int8" in cpu_flags():
            probe_compile(folder / "model.xml", names, (batch, seq), config)
        core = ov.Core()
        static = ov_model.clone()
        static.reshape({n: [batch, seq] for n in names})
        compiled = core.compile_model(static, "CPU", config)
        # other shapes run dense kernels: the crash probe covers only the timed shape
        dense_config = {k: v for k, v in config.items() if k != "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"}
        runner = _Runner(core, ov_model, compiled, dense_config, (batch, seq))
        fields.update(self._fields(compiled, (batch, seq)))
        return Prepared(PeerModule(names, runner, ir_bytes(ov_model)), fields)

    def compile_config(self, settings: PrepareSettings) -> dict[str, Any]:
        """CPU plugin properties for ``settings``: threads, one stream, latency hint, the precision
        hint of fp32 / bf16 (int8: OpenVINO's default), and the sparse-weights rate when set."""
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": int(settings.threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        }
        if PRECISION_HINTS[self.precision] is not None:
            config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[self.precision]
        if self.sparse_weights_rate is not None:
            config["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] = float(self.sparse_weights_rate)
        return config

    def _quantized(self, model: nn.Module, example: dict[str, torch.Tensor], names: list[str],
                   settings: PrepareSettings) -> tuple[Any, Path, dict[str, Any]]:
        """The NNCF-quantized dynamic-shape IR (from the cache or built now and cached), its cache
        folder, and the row fields describing it."""
        import nncf
        import openvino as ov

        calib = calibration_batches(settings, self.calibration_samples, names)
        key = hashlib.sha256(json.dumps({
            "weights": weights_digest(model), "calibration": arrays_digest(calib), "names": names,
            "method": QUANT_METHOD, "openvino": ov.__version__, "nncf": nncf.__version__,
        }, sort_keys=True).encode()).hexdigest()[:16]
        folder = cache_root(settings) / f"openvino-int8-{key}"
        ov_model, status = load_ir(folder), "hit"
        if ov_model is None:
            status = "miss"
            with quiet_trace():
                ov_model = nncf.quantize(convert(model, example, names), nncf.Dataset(calib),
                                         model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calib))
            save_ir(ov_model, folder)
        return ov_model, folder, {
            "quant_method": QUANT_METHOD, "quant_calibration_samples": len(calib), "quant_cache": status,
            "quant_cache_key": key,
        }

    def _fields(self, compiled: Any, shape: tuple[int, int]) -> dict[str, Any]:
        import openvino as ov

        layers = fully_connected_kernels(compiled)
        n_sparse = sum("sparse" in prim for prim, _ in layers)
        executed, reason = n_sparse > 0, self.sparse_reason(n_sparse, len(layers))
        return {
            "peer_engine": "openvino", "peer_version": ov.__version__, "peer_precision": self.precision,
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "peer_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "peer_static_shape": list(shape),
            "sparse_weights_rate": self.sparse_weights_rate,
            "sparse_primitive_executed": executed, "sparse_primitive_reason": reason,
            "fc_layers": len(layers), "fc_layers_int8": sum(p in ("i8", "u8") for _, p in layers),
            "fc_layers_sparse": n_sparse,
        }

    def sparse_reason(self, n_sparse: int, n_layers: int) -> str:
        """Why the compiled model did or did not run OpenVINO's sparse-weights kernel, given how
        many of its ``n_layers`` FullyConnected layers chose it."""
        if self.sparse_weights_rate is None:
            return "sparse_weights_rate not set"
        if n_sparse:
            return f"{n_sparse} of {n_layers} FullyConnected layers ran the sparse-weights kernel"
        if "amx_int8" not in cpu_flags():
            return ("this CPU has no AMX (amx_int8): OpenVINO's sparse-weights decompression needs it, "
                    "so the dense INT8 kernels ran")
        return (f"no FullyConnected layer has >= {self.sparse_weights_rate:.0%} zeros in INT8 weights with both "
                "dimensions multiples of 64, so the dense INT8 kernels ran")


class _Runner:
    """Runs the static compilation for the timed shape; any other shape (accuracy passes batch and
    pad differently) runs a dynamic-shape compilation of the same IR with ``config``, compiled on
    first use, so the timed path is never the dynamic one."""

    def __init__(self, core: Any, dynamic_model: Any, compiled: Any, config: dict[str, Any], shape: tuple[int, int]) -> None:
        self.core, self.dynamic_model, self.config, self.shape = core, dynamic_model, config, shape
        self.static_request = compiled.create_infer_request()
        self.dynamic_request = None

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if tuple(feeds["input_ids"].shape) == self.shape:
            request = self.static_request
        else:
            if self.dynamic_request is None:
                self.dynamic_request = self.core.compile_model(self.dynamic_model, "CPU", self.config).create_infer_request()
            request = self.dynamic_request
        return request.infer(feeds, share_inputs=True)[0]


def convert(model: nn.Module, example: dict[str, torch.Tensor], names: list[str]) -> Any:
    """``openvino.convert_model`` of ``model``'s logits with inputs ``names`` as int64 (?, ?):
    batch and sequence dynamic (each cell reshapes a clone to its static shape). The model is
    traced on a deep copy, so ``model`` is untouched."""
    import openvino as ov

    wrapped = LogitsOnly(copy.deepcopy(model)).eval()
    with quiet_trace(), torch.no_grad():
        return ov.convert_model(wrapped, example_input={n: example[n] for n in names},
                                input=[(n, [-1, -1], ov.Type.i64) for n in names])


def fully_connected_kernels(compiled: Any) -> list[tuple[str, str]]:
    """(primitiveType, runtimePrecision) of every FullyConnected layer of the compiled model's
    execution graph, e.g. ``("brgemm_avx512_amx_sparse_i8", "i8")``; a sparse-weights kernel has
    ``sparse`` in its primitive type."""
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if rt["layerType"].astype(str) == "FullyConnected":
            out.append((rt["primitiveType"].astype(str), rt["runtimePrecision"].astype(str)))
    return out


#: compiles an IR reshaped to a static shape, in a child process (see :func:`probe_compile`)
_PROBE = """
import json, sys
import openvino as ov
model = ov.Core().read_model(sys.argv[1])
model.reshape({n: json.loads(sys.argv[2]) for n in json.loads(sys.argv[3])})
ov.Core().compile_model(model, "CPU", json.loads(sys.argv[4]))
"""


def probe_compile(xml: Path, names: list[str], shape: tuple[int, int], config: dict[str, Any]) -> None:
    """Compile ``xml`` at ``shape`` with ``config`` in a child process first: OpenVINO's
    sparse-weights kernel can kill the process while compiling (seen with openvino 2026.4.1 on
    AMX: a BERT with hidden size 64 at <= 16 tokens per batch; MiniLM compiles), and a run must
    record the cell as failed rather than die. Raises RuntimeError naming the signal or error."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(xml), json.dumps(list(shape)), json.dumps(names), json.dumps(config)],
        capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        how = (f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit status {proc.returncode}: {proc.stderr.strip()[-400:]}")
        raise RuntimeError(f"OpenVINO compiling the model for shape {list(shape)} with {config} ended with {how} "
                           "(in a child process, so the run goes on)")


def ir_bytes(ov_model: Any) -> bytes:
    """The IR files (``.xml`` then ``.bin``, full-precision weights) of ``ov_model`` as one byte
    string: what a user would ship (node names, so a few bytes, differ between conversions)."""
    import tempfile

    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="sparsebench-ov-") as tmp:
        ov.save_model(ov_model, Path(tmp) / "model.xml", compress_to_fp16=False)
        return (Path(tmp) / "model.xml").read_bytes() + (Path(tmp) / "model.bin").read_bytes()


def load_ir(folder: Path) -> Any | None:
    """The IR cached in ``folder`` (``model.xml``/``.bin``), or None when absent or unreadable
    (a damaged entry is removed so that it is rebuilt)."""
    import openvino as ov

    xml = folder / "model.xml"
    if not xml.is_file():
        return None
    try:
        return ov.Core().read_model(xml)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        return None


def save_ir(ov_model: Any, folder: Path) -> None:
    """Write ``ov_model`` to ``folder`` atomically (a temporary sibling renamed into place);
    weights kept at full precision (no fp16 compression)."""
    import openvino as ov

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    ov.save_model(ov_model, tmp / "model.xml", compress_to_fp16=False)
    try:
        tmp.replace(folder)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
