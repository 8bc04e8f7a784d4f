"""Shared training utilities: device choice, seeding, EMA, atomic checkpoints, CSV logs, data sources."""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT = "checkpoint.pt"
LOG_CSV = "log.csv"


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(n: int | None) -> None:
    """Limit intra-op CPU threads (``None`` or 0 keeps torch's default)."""
    if n:
        torch.set_num_threads(int(n))
        os.environ.setdefault("OMP_NUM_THREADS", str(n))


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; returns a numpy generator for data sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def start_run(args: argparse.Namespace) -> tuple[torch.device, np.random.Generator, Path]:
    """Apply ``--threads``/``--device``/``--seed`` and create ``--out``: (device, data rng, run folder)."""
    set_threads(args.threads)
    device = pick_device(args.device)
    rng = seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return device, rng, out


def base_parser(description: str, out: str, steps: int, batch_size: int, lr: float) -> argparse.ArgumentParser:
    """The arguments every trainer shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=out, help="run folder: checkpoint, log.csv, samples")
    p.add_argument("--steps", type=int, default=steps, help="total optimiser steps (across resumes)")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out if present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=0.0, help="wall budget for this invocation (0 = unlimited)")
    p.add_argument("--ckpt-every", type=float, default=4.0, help="minutes between checkpoints")
    p.add_argument("--export", default=None, help="write the final diffusers folder here")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm bar")
    p.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast for forward passes (faster on CPUs with AVX512-BF16/AMX)"
    )
    return p


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards ``model`` (decay warms up over the first updates)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = [p for p in model.state_dict().values() if p.dtype.is_floating_point]
        dst = [p for p in self.shadow.state_dict().values() if p.dtype.is_floating_point]
        torch._foreach_mul_(dst, d)
        torch._foreach_add_(dst, src, alpha=1 - d)

    def reset(self, model: nn.Module) -> None:
        """Set the shadow equal to ``model``."""
        self.shadow.load_state_dict(model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.updates = int(state["updates"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` to a temp file, then rename it over ``path`` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers only


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """Numpy + torch RNG state, for exact resumption."""
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])


class CSVLog:
    """Appends rows to ``log.csv`` (header written once) and mirrors them to ``log.jsonl``."""

    def __init__(self, out: str | Path, fields: list[str]) -> None:
        self.path = Path(out) / LOG_CSV
        self.jsonl = Path(out) / "log.jsonl"
        self.fields = fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, **row: Any) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self.fields])
        with self.jsonl.open("a") as f:
            f.write(json.dumps({k: row.get(k) for k in self.fields}) + "\n")


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


class Budget:
    """Wall-clock budget plus periodic-checkpoint timer."""

    def __init__(self, minutes: float, ckpt_every_min: float) -> None:
        self.start = time.time()
        self.limit = minutes * 60 if minutes and minutes > 0 else float("inf")
        self.every = ckpt_every_min * 60
        self.last_ckpt = self.start

    def elapsed(self) -> float:
        return time.time() - self.start

    def exhausted(self) -> bool:
        return self.elapsed() >= self.limit

    def checkpoint_due(self) -> bool:
        if time.time() - self.last_ckpt >= self.every:
            self.last_ckpt = time.time()
            return True
        return False


def to_tensor(images: np.ndarray | list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) in [-1, 1]."""
    arr = np.ascontiguousarray(np.stack(list(images)) if isinstance(images, list) else images)
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B,3,H,W) in [-1, 1] -> uint8 (B,H,W,3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (or stacks), averaged per image."""
    a = a.astype(np.float64).reshape(-1, *a.shape[-3:]) if a.ndim >= 3 else a.astype(np.float64)
    b = b.astype(np.float64).reshape(a.shape)
    mse = ((a - b) ** 2).reshape(a.shape[0], -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def world_available() -> bool:
    """Whether the ShapesWorld module can be imported."""
    try:
        from editlab.datasets.shapesworld import world  # noqa: F401
    except Exception:
        return False
    return True


def random_shapes_batch(rng: np.random.Generator, batch_size: int, size: int = 64) -> tuple[np.ndarray, list[str]]:
    """Generic flat-colour shapes on a flat background (a stand-in data source for tests and VAE pretraining)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = np.empty((batch_size, size, size, 3), np.uint8)
    caps = []
    for i in range(batch_size):
        img = np.empty((size, size, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3)
        names = []
        for _ in range(int(rng.integers(1, 4))):
            kind = ["circle", "square", "triangle", "ring"][int(rng.integers(0, 4))]
            cx, cy = rng.uniform(0.15, 0.85, 2) * size
            r = rng.uniform(0.08, 0.25) * size
            if kind == "circle":
                m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
            elif kind == "ring":
                d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
                m = (d <= r) & (d >= 0.6 * r)
            elif kind == "square":
                m = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
            else:
                m = (yy <= cy + r) & (yy >= cy - r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
            img[m] = rng.integers(0, 256, 3)
            names.append(kind)
        out[i] = img
        caps.append("a " + " and a ".join(names))
    return out, caps


def image_source(name: str) -> Callable[[np.random.Generator, int, int], tuple[np.ndarray, list[str]]]:
    """``world`` -> ShapesWorld ``train_batch``; ``shapes`` -> :func:`random_shapes_batch`; ``auto`` picks."""
    if name == "auto":
        name = "world" if world_available() else "shapes"
    if name == "world":
        from editlab.datasets.shapesworld import world

        return lambda rng, b, size=64: world.train_batch(rng, b, size)
    if name == "shapes":
        return random_shapes_batch
    raise ValueError(f"unknown data source {name!r}")


def world_vocabulary() -> list[str]:
    """Every caption/prompt/instruction word of the world (or of the stand-in source)."""
    if world_available():
        from editlab.datasets.shapesworld import world

        return list(world.vocabulary())
    return ["a", "and", "circle", "square", "triangle", "ring"]


def batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Group an iterable into lists of ``n`` (the last may be shorter)."""
    buf: list[Any] = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
