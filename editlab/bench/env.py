"""Environment record written beside every run (env.json) and per-edit resource measurement."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from typing import Any

import torch

from editlab import ROOT, __version__


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        rev = out.stdout.strip()
        if not rev:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


VERSIONED = ("torch", "diffusers", "transformers", "torchmetrics", "lpips", "numpy", "scipy", "PIL", "torchvision")


def versions() -> dict[str, str | None]:
    """Versions of the libraries whose behaviour changes edits and metric values."""
    import importlib

    out: dict[str, str | None] = {"editlab": __version__}
    for name in VERSIONED:
        try:
            out[name if name != "PIL" else "pillow"] = getattr(importlib.import_module(name), "__version__", None)
        except ImportError:
            out[name] = None
    return out


def environment(device: torch.device) -> dict[str, Any]:

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
        device_name += f"{torch.get_num_threads()} torch threads)"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **versions(),
        "git_revision": git_revision(),
        "device": str(device),
        "device_name": device_name,
    }


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory during a block.

    On CUDA: ``torch.cuda.max_memory_allocated`` (kind ``cuda_max_allocated``). On CPU: the process resident
    set size sampled every 5 ms by a thread (kind ``cpu_rss_sampled``); it includes the loaded models.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss_sampled"
        self.peak_bytes = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20
