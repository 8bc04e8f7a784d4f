"""Judge protocols as data: which prompts are sent with which images, how replies are parsed, how sub-scores
combine into sample scores and how samples aggregate.

A protocol is a mapping (the ``protocol:`` node of a ``configs/metrics/judge/*.yaml`` file)::

    name: vie_gedit
    prompts: {source: prepared, name: vie_gedit}      # or {source: inline, texts: {key: text}}
    images: {resize: edited_to_source, format: png}     # how images are prepared (see ImagePolicy)
    layout: images_first                                # or text_first; optional per-image captions
    queries:                                            # one chat request each
      sc: {prompt: [key, key, ...], join: "\\n", fill: {mode: replace, values: {"<instruction>": instruction}},
           images: [source, edited], parser: vie, when: "..."}
    columns:                                            # per-sample values: expressions over query results
      vie_sc: {expr: "min(sc)", aspect: accuracy, higher_is_better: true}
    aggregate: {group_by: task_type, overall: mean_of_groups, subsets: {...}}

Expressions are evaluated by a small safe evaluator (numbers, + - * /, comparisons, ``and``/``or``/``not``,
``x if c else y`` (only the branch taken is evaluated), ``a[i]``, ``len``, ``min``, ``max``, ``mean``, ``sqrt``,
``round``, names of query results, of earlier columns and of sample fields); nothing else is allowed.
"""

from __future__ import annotations

import ast
import json
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from editlab.files import stable_hash


class ProtocolUnavailable(RuntimeError):
    """The protocol's prompt files are not prepared (``editlab data prepare judge/<protocol>``)."""


# --------------------------------------------------------------------------------------------------------
# Safe expressions
# --------------------------------------------------------------------------------------------------------
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


_FUNCS = {"min": min, "max": max, "mean": _mean, "sqrt": math.sqrt, "len": len, "abs": abs, "float": float,
          "round": round}


def names_in(expr: str) -> set[str]:
    """Names an expression reads (query results and sample fields)."""
    return {n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)} - set(_FUNCS)


def evaluate(expr: str, env: dict[str, Any]) -> Any:
    """Evaluate ``expr`` over ``env`` with the restricted grammar described in the module docstring."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise KeyError(f"expression {expr!r} reads '{node.id}', which is not available for this sample")
            return env[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            return _BIN[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node)
                if not _CMP[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, ast.Subscript):
            return ev(node.value)[ev(node.slice)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS \
                and not node.keywords:
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise ValueError(f"expression {expr!r}: {type(node).__name__} is not allowed")

    return ev(ast.parse(expr, mode="eval"))


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------
@dataclass
class ImagePolicy:
    """How images are sized and encoded before they are sent.

    ``resize``: ``none`` (each image as stored: the dataset's source at its own size, the edit as produced),
    ``edited_to_source`` (GEdit-Bench: the edit resized to the source's size, bicubic as PIL's default),
    ``source_to_edited`` (the source at the edit's working resolution, as editlab's other metrics see it);
    ``max_side``: when set, each image is shrunk (aspect kept, never enlarged) so its longer side is at most this
    (RISEBench's ``image_size=768`` thumbnail); ``format``: ``png`` or ``jpeg`` (``jpeg_quality``)."""

    resize: str = "none"
    max_side: int | None = None
    format: str = "png"
    jpeg_quality: int = 75

    def __post_init__(self) -> None:
        if self.resize not in ("none", "edited_to_source", "source_to_edited"):
            raise ValueError(f"images.resize must be none, edited_to_source or source_to_edited, got {self.resize!r}")

    def prepare(self, images: dict[str, Image.Image]) -> dict[str, Image.Image]:
        out = dict(images)
        if self.resize == "edited_to_source" and "source" in out and "edited" in out:
            out["edited"] = out["edited"].convert("RGB").resize(out["source"].size, Image.BICUBIC)
        elif self.resize == "source_to_edited" and "source" in out and "edited" in out:
            out["source"] = out["source"].convert("RGB").resize(out["edited"].size, Image.BICUBIC)
        if self.max_side:
            for k, im in out.items():
                im = im.copy()
                im.thumbnail((self.max_side, self.max_side))
                out[k] = im
        return out


# --------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------
@dataclass
class Query:
    """One chat request of a protocol."""

    name: str
    prompt: list[str]
    images: list[str]
    parser: str
    join: str = "\n"
    fill: dict[str, Any] = field(default_factory=dict)
    parser_args: dict[str, Any] = field(default_factory=dict)
    when: str | None = None
    captions: dict[str, str] = field(default_factory=dict)
    layout: str | None = None


@dataclass
class Column:
    """One per-sample value a protocol reports (a column ``<name>[<judge>]`` in tables)."""

    name: str
    expr: str
    aspect: str | None = None
    higher_is_better: bool = True
    definition: str = ""
    range: list[float] | None = None
    when: str | None = None


def _plain(node: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return node


class Protocol:
    """A parsed protocol mapping with its prompt texts loaded."""

    def __init__(self, spec: dict[str, Any], prompt_root: str | Path = "data/judge") -> None:
        spec = _plain(spec)
        self.spec = spec
        self.name = str(spec["name"])
        self.version = str(spec.get("version", "1"))
        self.reference = spec.get("reference", "")
        self.layout = spec.get("layout", "images_first")
        if self.layout not in ("images_first", "text_first"):
            raise ValueError(f"protocol {self.name}: layout must be images_first or text_first, got {self.layout!r}")
        self.images = ImagePolicy(**(spec.get("images") or {}))
        self.queries = {k: Query(name=k, **v) for k, v in (spec.get("queries") or {}).items()}
        self.columns = {k: Column(name=k, **v) for k, v in (spec.get("columns") or {}).items()}
        self.aggregate = spec.get("aggregate") or {}
        self.decoding = spec.get("decoding") or {}
        self.fields = spec.get("fields") or {}
        if not self.queries or not self.columns:
            raise ValueError(f"protocol {self.name} needs queries and columns")
        self.prompts, self.prompt_source = load_prompts(self.name, spec.get("prompts") or {}, Path(prompt_root))
        for q in self.queries.values():
            for key in q.prompt:
                if "{" not in key and key not in self.prompts:
                    raise ProtocolUnavailable(f"protocol {self.name}: prompt '{key}' is not among the prepared "
                                              f"prompts ({', '.join(sorted(self.prompts))})")
        for c in self.columns.values():
            names_in(c.expr)  # syntax check now, not on the first sample

    def prompt_hashes(self) -> dict[str, str]:
        """sha256 (first 16 hex digits) of every prompt text the protocol can send."""
        return {k: stable_hash(v, 16) for k, v in sorted(self.prompts.items())}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "reference": self.reference,
                "prompt_source": self.prompt_source, "prompt_hashes": self.prompt_hashes(),
                "spec_hash": stable_hash({k: v for k, v in self.spec.items() if k != "prompts"}, 16),
                "images": self.images.__dict__, "layout": self.layout, "aggregate": self.aggregate}

    def render(self, query: Query, fields: dict[str, Any]) -> str:
        """The prompt text of ``query`` for a sample with ``fields``."""
        keys = [k.format(**fields) if "{" in k else k for k in query.prompt]
        missing = [k for k in keys if k not in self.prompts]
        if missing:
            raise KeyError(f"no prompt {', '.join(missing)} in protocol {self.name}")
        text = query.join.join(self.prompts[k] for k in keys)
        values = {k: _field(fields, v) for k, v in (query.fill.get("values") or {}).items()}
        if query.fill.get("mode", "replace") == "format":
            return text.format(**values)
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        return text


def _field(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise KeyError(f"the sample has no {name}")
    return str(value)


# --------------------------------------------------------------------------------------------------------
# Prompt texts
# --------------------------------------------------------------------------------------------------------
def load_prompts(name: str, spec: dict[str, Any], root: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Prompt texts of a protocol: written inline (editlab's own protocols) or prepared from the benchmark's
    repository by ``editlab data prepare <name>`` (``<root>/<name>/editlab_prompts.json``, with the source file's hash
    checked against the one editlab records)."""
    source = spec.get("source", "inline")
    if source == "inline":
        texts = dict(spec.get("texts") or {})
        return texts, {"source": "inline (editlab)"}
    if source != "prepared":
        raise ValueError(f"protocol {name}: prompts.source must be inline or prepared, got {source!r}")
    from editlab.metrics.judge.sources import MANIFEST, PROMPTS_FILE, SOURCES, check_prepared

    prepared = spec.get("name", name)
    if prepared not in SOURCES:
        raise ValueError(f"protocol {name}: no prompt source '{prepared}', available: {', '.join(sorted(SOURCES))}")
    folder = root / prepared
    problem = check_prepared(prepared, folder)
    if problem:
        raise ProtocolUnavailable(f"protocol {name}: {problem}; run `editlab data prepare judge/{prepared}` "
                                  f"(or place the file as it prints)")
    texts = json.loads((folder / PROMPTS_FILE).read_text(encoding="utf-8"))
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return texts, {"source": "prepared", "folder": str(folder), **manifest}
