"""Memory budgets: parse ``--max-memory``, measure a call's peak, size batches from it.

``--batch-size auto`` (the default) sizes the rows per sampler call from one measured probe,
not from a guess: the first chunk of a run is one row, its peak memory above what was in use
before it (:class:`PeakMeter`) is the cost of a row, and later chunks take as many rows as the
budget left over holds (:func:`rows_per_call`). Since every sampler is batch-invariant, the
chunking never changes a result.

Budgets: ``--max-memory`` (e.g. ``4GB``, ``512MiB``); by default :data:`BUDGET_HELP`.

Peaks: on CUDA, the allocator's peak (``torch.cuda.max_memory_allocated`` after a reset); on
CPU, the process's peak resident set (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs``; Linux). Where neither is available the probe measures nothing and
the batch size falls back to :data:`FALLBACK_ROWS`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recon.errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads BUDGET_HELP cheaply
    import torch

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
#: CPU budget when none is given, and the parts of the device memory a default may take
DEFAULT_CPU_BYTES = 4 * 2**30
CPU_AVAILABLE_FRACTION = 0.8
GPU_FREE_FRACTION = 0.9
#: the default budget in words (help texts)
BUDGET_HELP = (
    f"default: {DEFAULT_CPU_BYTES // 2**30} GiB on CPU (at most "
    f"{CPU_AVAILABLE_FRACTION:.0%} of the available memory), {GPU_FREE_FRACTION:.0%} of the "
    "free memory on a GPU"
)
#: rows per call when a peak cannot be measured
FALLBACK_ROWS = 8
#: glibc ``mallopt`` parameters (``malloc.h``) and the size up to which freed blocks are kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 2**30


@functools.cache
def _libc() -> Any:
    """The C library through ctypes, or None where it cannot be loaded (once per process:
    ``find_library`` runs ``ldconfig``)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse large freed buffers instead of returning them to the OS.

    By default glibc serves blocks above a few MB with ``mmap`` and unmaps them when freed, so
    an iterative solver that allocates and frees the same full-size tensors every iteration
    (TV's primal-dual steps on 15 x 640 x 368 k-space) page-faults on each of them again: at
    fastMRI size, batch 3, 96 million minor faults and 58 % of the CPU time in the kernel
    (``benchmarks/README.md``, "Full-size"). Raising ``M_MMAP_THRESHOLD`` and
    ``M_TRIM_THRESHOLD`` to :data:`KEEP_FREED_BYTES` keeps those blocks in the heap. Called by
    the CLI at start; an API user may call it too. Does nothing (returns False) off glibc or
    when the user set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` themselves.
    """
    import ctypes
    import os

    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:  # not glibc (macOS, Windows, musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``; nothing elsewhere).

    Called before a CPU memory measurement: with :func:`keep_freed_memory` the heap keeps
    freed blocks, so the resident set would count them as in use, and a probe row could reuse
    them without growing the resident set, understating its cost."""
    import ctypes

    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)


def parse_size(text: str | int) -> int:
    """Bytes from ``4GB``, ``512MiB``, ``1.5gb``, ``1000000`` (decimal and binary units)."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise UserError(f"--max-memory {text!r}: give a size such as 4GB, 512MiB or 2e9 bytes")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UserError(f"--max-memory {text!r}: the budget must be positive")
    return value


def _status(field: str) -> int | None:
    """A ``/proc/self/status`` field (kB) in bytes, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _available_cpu() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gb(n: float) -> str:
    """Bytes as GB, or MB below 1 GB."""
    return f"{n / 1e9:.3g} GB" if n >= 1e9 else f"{n / 1e6:.3g} MB"


def check_request(nbytes: float, what: str) -> None:
    """Refuse, before allocating, a request that cannot fit in this machine's memory: one
    line saying what was asked, about how much memory it needs and how much is available.

    Raises:
        UserError: ``nbytes`` exceeds the memory available now (``MemAvailable``; no check
            where it cannot be read).
    """
    from recon.errors import UserError

    avail = _available_cpu()
    if avail is not None and nbytes > avail:
        raise UserError(
            f"{what} needs about {_gb(nbytes)} of memory; {_gb(avail)} is available. Ask for "
            "less (fewer items, samples or pixels)"
        )


def in_use(device: torch.device) -> int:
    """Bytes this process holds now: allocated CUDA memory, or the resident set on CPU (after
    the heap's free pages went back to the OS: :func:`release_freed_memory`)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    release_freed_memory()
    return _status("VmRSS") or 0


def budget(device: torch.device, max_memory: str | int | None = None) -> int:
    """The memory budget in bytes: ``max_memory`` if given, else the device default (module
    docstring)."""
    import torch

    if max_memory is not None:
        return parse_size(max_memory)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_FREE_FRACTION * (free + torch.cuda.memory_allocated(device)))
    avail = _available_cpu()
    if not avail:
        return DEFAULT_CPU_BYTES
    return min(DEFAULT_CPU_BYTES, in_use(device) + int(CPU_AVAILABLE_FRACTION * avail))


class PeakMeter:
    """``with PeakMeter(device) as m: ...`` measures the peak memory of the block above what
    was in use when it began (``m.peak``, bytes; None where it cannot be measured)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> PeakMeter:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            release_freed_memory()
            try:  # reset the peak resident set to the current one (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self._start = None
                return self
        self._start = in_use(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self._start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            top = int(torch.cuda.max_memory_allocated(self.device))
        else:
            top = _status("VmHWM")
            if top is None:
                return
        self.peak = max(top - self._start, 1)


#: a call of k rows is sized as k times the probe row's peak times this: the heap that
#: :func:`keep_freed_memory` keeps fragments, and 35 fastMRI-size TV rows in calls of 5 peaked
#: 3.9 % above a budget sized without it (``benchmarks/README.md``, "Full-size")
ROW_HEADROOM = 1.1
#: a call takes at most this fraction of the rows left, so that the progress bar and the
#: finished-row store advance several times even when the whole run would fit in one call
MAX_SHARE = 0.25


def rows_per_call(peak_per_row: int | None, budget_bytes: int, used: int, rows_left: int) -> int:
    """Rows per sampler call: as many rows of ``peak_per_row`` bytes (times
    :data:`ROW_HEADROOM`) as the budget holds above the ``used`` bytes, at most
    :data:`MAX_SHARE` of ``rows_left`` (at least 1); :data:`FALLBACK_ROWS` without a measured
    peak."""
    if peak_per_row is None:
        n = FALLBACK_ROWS
    else:
        n = int((budget_bytes - used) // (peak_per_row * ROW_HEADROOM))
    return int(max(1, min(n, math.ceil(MAX_SHARE * rows_left))))


class AutoBatch:
    """``--batch-size auto``: the first call of a run is one row, measured (:meth:`probe`);
    :meth:`rows_per_call` then sizes the later calls to ``budget_bytes``."""

    def __init__(self, device: torch.device | str, max_memory: str | int | None = None) -> None:
        import torch

        self.device = torch.device(device)
        self.budget_bytes = budget(self.device, max_memory)
        self.row_peak: int | None = None
        self.measured = False

    def probe(self, compute: Callable[[list[Any]], Any], chunk: list[Any]) -> Any:
        """``compute(chunk)`` (one row) under a :class:`PeakMeter`."""
        with PeakMeter(self.device) as meter:
            out = compute(chunk)
        self.row_peak, self.measured = meter.peak, True
        return out

    def rows_per_call(self, rows_left: int) -> int:
        return rows_per_call(self.row_peak, self.budget_bytes, in_use(self.device), rows_left)

    def record(self) -> dict[str, Any]:
        """What the results file records about the choice."""
        return {"budget_bytes": self.budget_bytes, "row_peak_bytes": self.row_peak}

    def warning(self) -> str | None:
        """One line when a single row needed more than the budget (the run went on, one row
        at a time, above it), else None."""
        if self.row_peak is None or self.row_peak <= self.budget_bytes:
            return None
        return (
            f"one row needed {_gb(self.row_peak)} of memory, above the budget of "
            f"{_gb(self.budget_bytes)} (--max-memory); the run went on one row at a time"
        )
