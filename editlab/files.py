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


def file_sha256(path: str | Path, cache_file: str | Path | None = None) -> str:
    """sha256 of a file's bytes. With ``cache_file``, digests are remembered by (path, size, mtime), so a large
    weight file is read once, not on every run."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = (read_json(cache_file) or {}) if cache_file is not None else {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if cache_file is not None:
        cache = read_json(cache_file) or {}  # another worker may have added entries meanwhile
        cache[key] = digest
        atomic_write_json(cache_file, cache)
    return digest


def weight_hashes(paths: list[Path], cache_file: str | Path | None = None) -> dict[str, str]:
    """``{file name relative to the repository when inside it, else absolute: sha256}`` of the existing files."""
    from editlab import ROOT

    out = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        resolved = p.resolve()
        label = str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)
        out[label] = file_sha256(resolved, cache_file)
    return dict(sorted(out.items()))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def model_weight_files(source: str | Path) -> list[Path]:
    """The weight files of a model given as a folder (relative to the repository root allowed), a file, or a hub id
    already in the Hugging Face cache; sorted, empty when nothing is local."""
    from editlab import ROOT

    p = Path(source)
    if not p.is_absolute() and not p.exists() and (ROOT / p).exists():
        p = ROOT / p
    if not p.exists() and "/" in str(source) and not p.is_absolute():
        try:  # a hub id already in the Hugging Face cache
            from huggingface_hub import snapshot_download

            p = Path(snapshot_download(str(source), local_files_only=True))
        except Exception:
            return []
    if p.is_file():
        return [p]
    if not p.is_dir():
        return []
    return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
