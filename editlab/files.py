"""Hashing, seeds and atomic writes: what makes runs resumable and crash-safe."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image


def stable_hash(obj: Any, length: int = 10) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys), first ``length`` hex digits."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def derive_seed(seed: int, sample_id: str) -> int:
    """Per-sample seed from (run seed, sample id): independent of sample order, sharding and resumption."""
    return int(hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()[:8], 16) % (2**31 - 1)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(sample_id: str) -> str:
    """A file-name-safe form of a sample id; ids that needed changes get a short hash to stay unique."""
    cleaned = _UNSAFE.sub("_", sample_id)[:120]
    if cleaned != sample_id:
        cleaned = f"{cleaned}-{stable_hash(sample_id, 8)}"
    return cleaned


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=True) + "\n")


def atomic_save_image(path: str | Path, image: Image.Image) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | Path) -> Any | None:
    """Parsed JSON, or None when the file is missing or unreadable (never half-written: writes are atomic)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
