"""Layering: data types, models and file helpers at the bottom; methods, metrics and datasets above them; the
runner, CLI and reports (``editlab.bench``, ``editlab.reports``) on top. Nothing below imports what is above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from editlab import ROOT

BELOW = ["types.py", "files.py", "registry.py", "models", "methods", "metrics", "datasets"]
ABOVE = ("editlab.bench", "editlab.reports")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _files() -> list[Path]:
    files: list[Path] = []
    for entry in BELOW:
        p = ROOT / "editlab" / entry
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_lower_layers_never_import_the_runner(path: Path) -> None:
    bad = [m for m in _imports(path) if m.startswith(ABOVE)]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from editlab.bench.runner import run\n")
    assert any(m.startswith(ABOVE) for m in _imports(f))
