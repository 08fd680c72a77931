"""``nvml``: NVIDIA GPU energy through NVML (``pynvml`` from the ``nvidia-ml-py`` package).

Per GPU ``i`` (domain ``gpu:i``):

* **counter** mode (Volta and newer): ``nvmlDeviceGetTotalEnergyConsumption`` — millijoules since
  the driver was loaded — read at every :meth:`NvmlMeter.read`; labelled ``measured``.
* **poll** mode, when that counter raises (``NVMLError_NotSupported``, not ready, …) or reads 0
  (older GPUs report 0 instead of failing): ``nvmlDeviceGetPowerUsage`` (milliwatts) is sampled
  by a background thread at ``poll_hz`` (≥ 10 Hz) and integrated with the trapezoid rule into a
  cumulative joule counter; every :meth:`~NvmlMeter.read` also takes a sample so window edges are
  exact. Labelled ``power-poll``.

A counter that starts failing mid-run yields ``None`` for that read (the window that spans it is
unknown, not 0 J) and the device switches to poll mode for later windows. NVML missing (package
not installed, no driver, no GPU) → :meth:`~NvmlMeter.availability` is ``(False, reason)``.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, ClassVar

from accelerators.params import Range, check_ranges

from profiler.meters.base import Counter, EnergyMeter, Reading

# NVML return codes (nvml.h) used to word reasons; compared by value so a fake module works.
_NOT_SUPPORTED, _NO_PERMISSION, _DRIVER_NOT_LOADED, _LIB_NOT_FOUND = 3, 4, 9, 12
_NOT_READY = 27


def _nvml_error_text(e: BaseException) -> str:
    v = getattr(e, "value", None)
    names = {_NOT_SUPPORTED: "NotSupported", _NO_PERMISSION: "NoPermission",
             _DRIVER_NOT_LOADED: "DriverNotLoaded", _LIB_NOT_FOUND: "LibraryNotFound",
             _NOT_READY: "NotReady"}
    label = names.get(v)
    text = str(e) or type(e).__name__
    return f"{label} ({text})" if label and label not in text else text


@dataclass
class _Gpu:
    index: int
    handle: Any
    name: str
    mode: str                  # "counter" | "poll" | "broken"
    note: str = ""
    energy_j: float = 0.0      # poll mode: integrated joules
    last_t: float | None = None
    last_w: float | None = None
    max_gap_s: float = 0.0
    errors: int = 0
    last_error: str = ""
    flags: list[str] = field(default_factory=list)


def visible_nvml_indices(nv: Any, count: int, visible: str | None, order: str) -> tuple[list[int], str]:
    """NVML indices of the GPUs ``CUDA_VISIBLE_DEVICES`` (``visible``) lets this process use, and a
    note saying how they were chosen ("" when it is unset: every GPU). Entries are UUIDs
    (``GPU-…``, prefixes allowed), matched against ``nvmlDeviceGetUUID``, or CUDA indices: NVML's own
    under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, else matched by UUID through ``torch.cuda`` (CUDA's default
    order is fastest first, NVML's is PCI bus order). An entry that matches nothing ends the list,
    as CUDA does."""
    if visible is None:
        return list(range(count)), ""
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if not entries or entries[0] == "-1":
        return [], f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"

    def uuid_of(i: int) -> str:
        try:
            u = nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))
        except Exception:  # a GPU this process may not open matches no entry
            return ""
        return u.decode() if isinstance(u, bytes) else str(u)

    uuids = [uuid_of(i) for i in range(count)]
    out: list[int] = []
    for cuda_index, e in enumerate(entries):
        if e.startswith("GPU-"):
            hit = [i for i, u in enumerate(uuids) if u.startswith(e)]
        elif e.isdigit() and order == "PCI_BUS_ID":
            hit = [int(e)] if int(e) < count else []
        elif e.isdigit():
            try:
                import torch

                u = "GPU-" + str(torch.cuda.get_device_properties(cuda_index).uuid)
                hit = [i for i, v in enumerate(uuids) if v == u]
            except Exception:  # no CUDA in this process: fall back to NVML's numbering, said in the note
                hit = [int(e)] if int(e) < count else []
                order = "NVML's numbering assumed"
        else:
            hit = []
        if len(hit) != 1:
            break
        out.append(hit[0])
    return out, f"CUDA_VISIBLE_DEVICES={visible!r} → NVML {', '.join(map(str, out)) or 'none'}" + (
        f"; {order}" if order not in ("PCI_BUS_ID", "FASTEST_FIRST") else "")


class NvmlMeter(EnergyMeter):
    """NVIDIA GPU energy, one ``gpu:<index>`` domain per device.

    Args:
        devices: NVML indices of the GPUs to measure; ``None`` = the GPU a cell runs on as
            ``"cuda"``: the first this process may use, of those ``CUDA_VISIBLE_DEVICES`` names
            (UUIDs matched to NVML's; indices are NVML's only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``,
            else matched by UUID through torch), of all when it is unset — not another GPU's idle
            draw, nor another tenant's GPU on a shared host.
        poll_hz: power-sampling rate in poll mode (Hz); must be ≥ 10.
        force_poll: use power polling even where the energy counter works (for comparisons).
        nvml: the NVML module (``pynvml``-compatible); ``None`` imports ``pynvml``. Tests inject
            a fake module.
        clock: monotonic clock in seconds.
        background: run the polling thread between :meth:`start` and :meth:`stop`; with
            ``False`` only explicit :meth:`sample` calls and reads sample (tests).

    Raises:
        ValueError: ``poll_hz < 10``.
    """

    name: ClassVar[str] = "nvml"
    method = "measured"
    resolution_s = 0.1   # NVML energy/power update period is ~100 ms (min window 1 s)

    def __init__(
        self,
        devices: Annotated[list[int] | None, Range(0, 1023)] = None,
        poll_hz: Annotated[float, Range(10.0, 10_000.0)] = 20.0,
        force_poll: bool = False,
        *,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,  # tests drive sampling by hand
    ):
        check_ranges(NvmlMeter.__init__, {"poll_hz": poll_hz, "devices": devices})
        self.devices = devices
        self.poll_hz = float(poll_hz)
        self.force_poll = force_poll
        self._nvml = nvml
        self._clock = clock
        self._background = background
        self._gpus: list[_Gpu] | None = None
        self._avail: tuple[bool, str] | None = None
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    # -- probing --------------------------------------------------------------------------
    def availability(self) -> tuple[bool, str]:
        """``(True, "gpu:0 <name> energy counter; …")`` or ``(False, reason)`` when pynvml is not
        installed, the NVIDIA driver/library is missing, there is no GPU, or no GPU can be
        measured. Never raises."""
        if self._avail is None:
            try:
                self._avail = self._probe()
            except Exception as e:  # a broken driver must not crash the profiler
                self._avail = (False, f"NVML probe failed: {_nvml_error_text(e)}")
        return self._avail

    def _probe(self) -> tuple[bool, str]:
        nv = self._nvml
        if nv is None:
            try:
                import pynvml as nv  # type: ignore[no-redef]
            except ImportError:
                return False, "pynvml (nvidia-ml-py) is not installed"
            self._nvml = nv
        err = getattr(nv, "NVMLError", Exception)
        try:
            nv.nvmlInit()
        except err as e:
            v = getattr(e, "value", None)
            if v in (_LIB_NOT_FOUND, _DRIVER_NOT_LOADED):
                return False, f"NVML library/driver not found ({e}): no NVIDIA GPU driver here"
            return False, f"nvmlInit failed: {_nvml_error_text(e)}"
        except OSError as e:
            return False, f"NVML library not loadable: {e}"
        count = nv.nvmlDeviceGetCount()
        if count == 0:
            return False, "NVML found no NVIDIA GPU"
        if self.devices is not None:
            indices, chosen = self.devices, ""
        else:
            indices, chosen = visible_nvml_indices(nv, count, os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                   os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST"))
            if not indices:
                return False, f"no GPU to measure: {chosen}"
            if len(indices) > 1:  # a cell runs on "cuda", torch's first visible GPU: the others' draw is not its own
                chosen = "; ".join(filter(None, (chosen, f"the first of {len(indices)} visible GPUs, the one cells run on "
                                                         "as 'cuda'; meter devices = [...] measures others too")))
                indices = indices[:1]
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            return False, f"GPU index {bad} out of range (found {count})"
        gpus = []
        for i in indices:
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
            except err as e:  # this GPU only (no permission, lost): the others are still measured
                gpus.append(_Gpu(i, None, "unknown GPU", "broken", f"no handle: {_nvml_error_text(e)}"))
                continue
            try:
                name = nv.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
            except err:
                name = "unknown GPU"
            gpus.append(self._classify(nv, err, i, h, name))
        self._gpus = gpus
        usable = [g for g in gpus if g.mode != "broken"]
        if not usable:
            return False, "; ".join(f"gpu:{g.index} {g.name}: {g.note}" for g in gpus)
        self.method = "power-poll" if any(g.mode == "poll" for g in usable) else "measured"
        return True, "; ".join(f"gpu:{g.index} {g.name}: {g.note}" for g in gpus) + (f" ({chosen})" if chosen else "")

    def _classify(self, nv, err, i, h, name) -> _Gpu:
        why = "forced" if self.force_poll else ""
        if not self.force_poll:
            try:
                mj = nv.nvmlDeviceGetTotalEnergyConsumption(h)
                if mj and mj > 0:
                    return _Gpu(i, h, name, "counter", "total-energy counter (measured)")
                why = "total-energy counter reads 0"
            except err as e:
                why = f"total-energy counter {_nvml_error_text(e)}"
        try:
            nv.nvmlDeviceGetPowerUsage(h)
        except err as e:
            return _Gpu(i, h, name, "broken",
                        f"{why}; power usage also unavailable: {_nvml_error_text(e)}")
        return _Gpu(i, h, name, "poll",
                    f"{why} → power polled at {self.poll_hz:g} Hz (power-poll)")

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> None:
        """Take one power sample for every poll-mode GPU and integrate it (thread-safe). On Ampere
        and newer GPUs ``nvmlDeviceGetPowerUsage`` is an average over the last second, so a visit
        much shorter than that integrates mostly the power of what ran before it."""
        if not self.availability()[0]:
            return
        nv = self._nvml
        err = getattr(nv, "NVMLError", Exception)
        with self._lock:
            for g in self._gpus or []:
                if g.mode != "poll":
                    continue
                t = self._clock()
                try:
                    w = nv.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
                except err as e:
                    g.errors += 1
                    g.last_error = _nvml_error_text(e)
                    continue  # the next good sample integrates across the gap (flagged)
                if g.last_t is not None and g.last_w is not None:
                    dt = t - g.last_t
                    if dt > 0:
                        g.energy_j += 0.5 * (g.last_w + w) * dt
                        g.max_gap_s = max(g.max_gap_s, dt)
                g.last_t, g.last_w = t, w

    def _poll_loop(self) -> None:
        period = 1.0 / self.poll_hz
        while not self._stop_evt.wait(period):
            try:
                self.sample()
            except Exception:  # keep sampling; read() reports errors via flags
                pass

    def start(self) -> None:
        """Take a first sample and start the ``poll_hz`` thread for poll-mode GPUs. Idempotent."""
        if not self.availability()[0]:
            return
        self._started = True
        if not any(g.mode == "poll" for g in self._gpus or []):
            return
        if self._thread is None:  # (re)starting after stop(): the stopped time is no window's, nor a gap in sampling
            with self._lock:
                for g in self._gpus or []:
                    g.last_t = g.last_w = None
                    g.max_gap_s = 0.0
        self.sample()
        if self._background and self._thread is None:
            self._stop_evt.clear()
            self._thread = threading.Thread(target=self._poll_loop, name="nvml-power-poll",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread. Idempotent."""
        self._started = False
        if self._thread is not None:
            self._stop_evt.set()
            self._thread.join()
            self._thread = None

    def read(self) -> Reading:
        """Cumulative joules per ``gpu:<i>``: the NVML counter (mJ → J) or the integrated power.

        A poll-mode counter is flagged when samples were further apart than 2 / ``poll_hz``
        (plus 50 ms) or some samples failed. Raises ``RuntimeError`` if NVML is unavailable.
        """
        ok, reason = self.availability()
        if not ok:
            raise RuntimeError(f"NVML unavailable: {reason}")
        nv = self._nvml
        err = getattr(nv, "NVMLError", Exception)
        self.sample()
        counters: dict[str, Counter] = {}
        t = self._clock()
        gap_limit = 2.0 / self.poll_hz + 0.05
        switched = False
        with self._lock:
            for g in self._gpus or []:
                dom = f"gpu:{g.index}"
                if g.mode == "counter":
                    try:
                        mj = nv.nvmlDeviceGetTotalEnergyConsumption(g.handle)
                        counters[dom] = Counter(mj / 1000.0, method="measured")
                        continue
                    except err as e:
                        switched = True
                        g.mode, g.note = "poll", (f"total-energy counter failed mid-run "
                                                  f"({_nvml_error_text(e)}) → power-poll")
                        self.method = "power-poll"
                        counters[dom] = Counter(None, flag=g.note, method="power-poll")
                        continue
                if g.mode == "broken" or g.last_t is None:
                    counters[dom] = Counter(None, flag=g.note or "no power sample yet",
                                            method="power-poll")
                    continue
                flags = []
                if g.max_gap_s > gap_limit:
                    flags.append(f"power sampled only every {g.max_gap_s:.3f} s at worst "
                                 f"(target {1 / self.poll_hz:.3f} s)")
                if g.errors:
                    flags.append(f"{g.errors} power samples failed ({g.last_error})")
                g.max_gap_s, g.errors = 0.0, 0
                counters[dom] = Counter(g.energy_j, flag="; ".join(flags) or None,
                                        method="power-poll")
        if switched and self._started:
            self.start()  # a device switched to poll mode mid-run: keep its integral going
        return Reading(t_s=t, counters=counters)

    def describe(self) -> dict:
        """``nvml_gpus``: ``{"gpu:0": "<name>: <mode note>"}``, ``nvml_poll_hz``."""
        d = {"meter": self.name, "method": self.method, "nvml_poll_hz": self.poll_hz}
        if self._gpus is not None:
            d["nvml_gpus"] = {f"gpu:{g.index}": f"{g.name}: {g.note}" for g in self._gpus}
        else:
            d["nvml_status"] = self.availability()[1]
        return d

    def close(self) -> None:
        """Stop polling and shut NVML down (best effort)."""
        self.stop()
        if self._nvml is not None and self._avail and self._avail[0]:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
