"""The judge response cache: one JSON file per reply under ``<results_dir>/_cache/judge/``, keyed by a hash of
the sent images' bytes, the prompt text, the judge (endpoint-independent: the model requested and the judge's
label) and the decoding settings (seed included), so a rerun sends nothing and a changed judge, prompt, image
or decoding is a new entry, never an overwrite. Writes are atomic (:mod:`editlab.files`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editlab.files import atomic_write_json, read_json, stable_hash


def cache_key(image_hashes: list[str], prompt: str, judge: dict[str, Any], decoding: dict[str, Any]) -> str:
    return stable_hash({"images": image_hashes, "prompt": stable_hash(prompt, 64), "judge": judge,
                        "decoding": decoding}, 32)


class JudgeCache:
    """Replies by key in ``root`` (None: no caching)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        entry = read_json(self._path(key))
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        if self.root is not None:
            atomic_write_json(self._path(key), {**entry, "key": key})
