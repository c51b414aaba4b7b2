"""The device a run trains on, and its time and memory through one device-agnostic helper, so CPU and GPU
runs fill the same table.

    device = pick_device("auto")
    timer = StepTimer(device); timer.start(); ...step...; timer.stop(); timer.flush()  # at sync points
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from grokrun.errors import UserError


def pick_device(name: str) -> torch.device:
    """--device: auto takes CUDA, then MPS, then the CPU; one asked for that is not here is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or --device auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available here; use --device cpu or --device auto")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """"cpu", or "cuda (NVIDIA H200)": what a summary records."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class StepTimer:
    """Per-step durations without a host sync per step.

    On CUDA each step is bracketed by events that are read only at ``flush`` (an evaluation point);
    elsewhere the ops are synchronous, so a clock read per step is exact.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.ms: list[float] = []
        self._pending: list[tuple] = []
        self._t0 = 0.0

    def start(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._pending.append((event,))
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._pending[-1] += (event,)
        else:
            self.ms.append((time.perf_counter() - self._t0) * 1e3)

    def flush(self) -> None:
        """Resolve pending CUDA events (this waits for the GPU)."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self.ms.extend(a.elapsed_time(b) for a, b in self._pending)
            self._pending.clear()

    def median_ms(self) -> float | None:
        self.flush()
        return statistics.median(self.ms) if self.ms else None


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak: CUDA's allocator counter, or the process's resident-set high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: writing 5 resets VmHWM to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # elsewhere the peak is the process's lifetime peak


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated by tensors. Otherwise: peak resident set of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
