"""Where the benchmark judge protocols' prompt texts come from, and how ``editlab data prepare judge/<protocol>``
fetches and checks them. The texts belong to their authors and are never part of editlab: each is downloaded
from the benchmark's public repository at a fixed commit, checked against the SHA-256 recorded here, and its
prompt strings extracted to ``<root>/<protocol>/editlab_prompts.json`` beside the original file and a manifest.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "editlab_manifest.json"
PROMPTS_FILE = "editlab_prompts.json"
TIMEOUT_S = 60


@dataclass(frozen=True)
class PromptSource:
    """One file of a public repository holding a benchmark's judge prompts."""

    title: str
    repo: str
    commit: str
    path: str
    sha256: str | None          # None: not pinned by editlab (the first verified download is recorded)
    kind: str                   # python_strings | json_dict
    note: str = ""

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"

    @property
    def filename(self) -> str:
        return Path(self.path).name


SOURCES: dict[str, PromptSource] = {
    "vie_gedit": PromptSource(
        title="GEdit-Bench VIEScore prompts (Step1X-Edit)", repo="stepfun-ai/Step1X-Edit",
        commit="570eba6ebda0c45c013983a483afbf2fd12bfcbc", path="GEdit-Bench/viescore/vie_prompts.py",
        sha256="010234af186eb0a70fcb99047cd32ad1da01bed59ca1a95a01335426417cf838", kind="python_strings"),
    "imgedit": PromptSource(
        title="ImgEdit-Bench basic-edit judge prompts", repo="PKU-YuanGroup/ImgEdit",
        commit="547185d12c08267a862b94248576e1746e479937", path="Benchmark/Basic/prompts.json",
        sha256="f9468dc848776ee0a6c2e2c31e678c7224e9cb61b013747c8c52d4a05627b5a0", kind="json_dict"),
    "rise": PromptSource(
        title="RISEBench judge prompts", repo="PhoenixZ810/RISEBench",
        commit="5f226519b25c005bb32fb83864bbd1845ab85c23", path="utils.py",
        sha256="c8a693294768b7ceb355d98d3bc71f40c4fe51979a2e84ffc07f829764b676a3", kind="python_strings"),
    "kris": PromptSource(
        title="KRIS-Bench judge prompts", repo="mercurystraw/Kris_Bench", commit="main", path="utils/prompts.py",
        sha256=None, kind="python_strings",
        note="KRIS-Bench's scoring scripts import their prompts from a module its repository did not hold when "
             "editlab was written, so editlab pins no hash: the first download is recorded and later ones are "
             "checked against it. Pass --sha256 to pin the file you trust."),
}


def extract_prompts(kind: str, data: bytes) -> dict[str, str]:
    """Prompt strings of a source file: module-level string assignments of a Python file (parsed, never run),
    or the string values of a JSON object."""
    text = data.decode("utf-8")
    if kind == "json_dict":
        obj = json.loads(text)
        return {str(k): v for k, v in obj.items() if isinstance(v, str)}
    if kind == "python_strings":
        out = {}
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                out[node.targets[0].id] = node.value.value
        return out
    raise ValueError(f"unknown prompt source kind {kind!r}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_prepared(name: str, folder: Path) -> str | None:
    """None when ``folder`` holds the verified, extracted prompts of ``name``; else what is wrong."""
    src = SOURCES[name]
    original, prompts, manifest = folder / src.filename, folder / PROMPTS_FILE, folder / MANIFEST
    if not original.is_file() or not prompts.is_file() or not manifest.is_file():
        return f"its prompt file is not prepared in {folder}"
    digest = _sha256(original.read_bytes())
    recorded = json.loads(manifest.read_text(encoding="utf-8")).get("sha256")
    expected = src.sha256 or recorded
    if digest != expected:
        return f"{original} has SHA-256 {digest[:16]}..., expected {str(expected)[:16]}..."
    return None


def write_prepared(name: str, folder: Path, data: bytes, how: str) -> dict[str, Any]:
    """Store a verified source file, its extracted prompts and a manifest in ``folder``."""
    from editlab.files import atomic_write_bytes, atomic_write_json

    src = SOURCES[name]
    prompts = extract_prompts(src.kind, data)
    if not prompts:
        raise ValueError(f"{src.path} holds no prompt strings")
    manifest = {"protocol": name, "title": src.title, "repo": src.repo, "commit": src.commit, "path": src.path,
                "url": src.url, "sha256": _sha256(data), "pinned_by_editlab": src.sha256 is not None,
                "how": how, "prepared": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "prompts": sorted(prompts)}
    atomic_write_bytes(folder / src.filename, data)
    atomic_write_json(folder / PROMPTS_FILE, prompts)
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def _download(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "editlab-data-prepare"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (https URLs only)
        return response.read()


def instructions(name: str, folder: Path) -> str:
    src = SOURCES[name]
    pin = f"SHA-256 {src.sha256}" if src.sha256 else "no SHA-256 pinned by editlab (see the note)"
    lines = [f"{src.title}: download\n  {src.url}\nand place it at\n  {folder / src.filename}\n({pin}), then run "
             f"`editlab data prepare judge/{name}` again."]
    if src.note:
        lines.append(src.note)
    return "\n".join(lines)


def prepare(name: str, root: Path, offline: bool = False, sha256: str | None = None, out: Any = None) -> int:
    """``editlab data prepare judge/<protocol>``: 0 prepared and verified, 1 a file with the wrong hash, 2 missing."""
    out = out or sys.stdout
    src = SOURCES[name]
    folder = Path(root) / name
    expected = sha256 or src.sha256
    placed = folder / src.filename
    if placed.is_file():
        data, how = placed.read_bytes(), "placed by hand"
        manifest = folder / MANIFEST
        if manifest.is_file():
            how = json.loads(manifest.read_text(encoding="utf-8")).get("how", how)
            expected = expected or json.loads(manifest.read_text(encoding="utf-8")).get("sha256")
    else:
        offline = offline or any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                                 for v in ("HF_HUB_OFFLINE", "EDITLAB_OFFLINE"))
        if offline:
            print(f"[{name}] not found at {folder} (offline).\n\n{instructions(name, folder)}", file=out)
            return 2
        print(f"[{name}] downloading {src.url} ...", file=out)
        try:
            data, how = _download(src.url), f"downloaded from {src.url}"
        except Exception as err:  # network, HTTP: cannot fetch
            print(f"[{name}] could not download: {type(err).__name__}: {err}\n\n{instructions(name, folder)}",
                  file=out)
            return 2
    digest = _sha256(data)
    if expected and digest != expected:
        print(f"[{name}] {src.filename} has SHA-256 {digest}, expected {expected}: not used.", file=out)
        return 1
    manifest = write_prepared(name, folder, data, how)
    pinned = "matches the SHA-256 editlab records" if src.sha256 or sha256 else \
        "recorded (no hash pinned by editlab; later runs check against this one)"
    print(f"[{name}] {src.filename}: SHA-256 {digest} {pinned}; {len(manifest['prompts'])} prompts extracted to "
          f"{folder / PROMPTS_FILE}", file=out)
    print(f"[{name}] ok", file=out)
    return 0
