"""Comparison tables from stored results (no models needed).

Rows are methods grouped by the survey's learning strategy (an ``<editor>+<inversion>`` method also shows its
inversion and editor); columns are metrics grouped by family (structure, preservation, text alignment, ...),
each with an arrow for its direction and ``mean ± half-width of the bootstrap 95% CI`` over the samples where
the metric is defined, then runtime, peak memory and sample counts. In every table the best mean of a column
is marked, and a method whose paired test against that best is significant (bootstrap CI of the mean
difference excludes 0 and Wilcoxon p < 0.05, on the samples both edited) carries a dagger.

Besides the main table: a per-task-type table (semantic / stylistic / structural sub-types as columns, the
survey's EditEval layout), an inversion x editor grid, every paired comparison (``paired.csv``) and, when a run
matches a published reference table, the paper comparison (:mod:`editlab.reports.paper`). Everything is
written as Markdown, CSV, LaTeX (booktabs) and HTML, and renders identically from the same stored results.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from editlab.files import atomic_write_text
from editlab.types import LearningStrategy, TaskType

STRATEGY_ORDER = [s.value for s in (LearningStrategy.TRAINING_BASED, LearningStrategy.TESTING_TIME_FINETUNING,
                                    LearningStrategy.TRAINING_FREE)]
TASK_METRIC_PREFERENCE = ("edit_acc", "pie_clip_whole", "clip_score", "pie_psnr_unedit", "bg_psnr")
FAMILY_ORDER = ("structure", "preservation", "text alignment", "edit accuracy", "ground truth", "distribution",
                "other", "cost")
#: Inversion names (editlab's and PIE-Bench's spellings) used to read ``a+b`` method names in either order.
KNOWN_INVERSIONS = {"ddim", "nti", "npi", "direct", "edict", "ddpm", "null-text", "null_text", "nt", "np",
                    "negative-prompt", "styled", "stylediffusion", "directinversion", "pnpinversion", "di"}
SIGNIFICANCE_NOTE = ("**bold**: best mean of the column; †: significantly worse than that best (paired bootstrap "
                     "95% CI of the mean difference excludes 0 and Wilcoxon p < 0.05, samples both edited); "
                     "± is the half-width of the bootstrap 95% CI of the mean")
COST_COLUMNS = ("s/edit ↓", "peak MB ↓", "ok/err/n.a.")


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------
def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders (those holding results.json) under each path, sorted."""
    runs: set[Path] = set()
    for p in map(Path, paths):
        if (p / "results.json").exists():
            runs.add(p)
        elif p.is_dir():
            runs.update(r.parent for r in p.rglob("results.json") if "_hydra" not in r.parts)
    return sorted(runs)


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(results.json, samples.jsonl records) of one run folder."""
    results = json.loads((run_dir / "results.json").read_text())
    lines = (run_dir / "samples.jsonl").read_text().splitlines() if (run_dir / "samples.jsonl").exists() else []
    return results, [json.loads(line) for line in lines if line]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class LoadedRun:
    """One run folder as the reports see it: its results, its sample records and its table label."""

    run_dir: Path
    results: dict[str, Any]
    records: list[dict[str, Any]]
    label: str

    @property
    def method(self) -> str:
        return self.results.get("method", "?")

    @property
    def dataset(self) -> str:
        return self.results.get("dataset", "?")

    @property
    def strategy(self) -> str:
        return (self.results.get("taxonomy") or {}).get("learning_strategy", "?")

    @property
    def parts(self) -> tuple[str, str] | None:
        """(editor, inversion) of an inversion x editor method, else None."""
        return split_method(self.results)

    @property
    def env(self) -> dict[str, Any]:
        return _read_json(self.run_dir / "env.json")

    @property
    def backbone(self) -> dict[str, Any]:
        return self.results.get("backbone") or _read_json(self.run_dir / "backbone.json")

    def definitions(self) -> dict[str, dict[str, Any]]:
        return self.results.get("metric_definitions") or {}


def load_runs(run_dirs: list[Path]) -> list[LoadedRun]:
    """Load run folders and give each a unique table label (see :func:`_labels`)."""
    loaded = [(Path(d), *load_run(Path(d))) for d in run_dirs]
    labels = _labels([r for _, r, _ in loaded])
    return [LoadedRun(d, res, recs, label) for (d, res, recs), label in zip(loaded, labels)]


def _labels(runs: list[dict[str, Any]]) -> list[str]:
    """Method name, plus the settings that differ between runs of the same method."""
    labels = []
    for res in runs:
        same = [r for r in runs if r["method"] == res["method"]]
        if len(same) == 1:
            labels.append(res["method"])
            continue
        keys = sorted({k for r in same for k in r["method_settings"]} - {"_target_", "name"})
        diff = [k for k in keys if len({json.dumps(r["method_settings"].get(k)) for r in same}) > 1]
        parts = [f"{k}={res['method_settings'].get(k)}" for k in diff]
        if len({r["seed"] for r in same}) > 1:
            parts.append(f"seed={res['seed']}")
        if len({(r.get("backbone") or {}).get("name") for r in same}) > 1:
            parts.append(f"backbone={(res.get('backbone') or {}).get('name')}")
        if len({r.get("dataset") for r in same}) > 1:
            parts.append(f"dataset={res.get('dataset')}")
        labels.append(f"{res['method']} ({', '.join(parts)})" if parts else f"{res['method']} [{res['run_key']}]")
    return labels


# --------------------------------------------------------------------------------------------------------
# Taxonomy helpers
# --------------------------------------------------------------------------------------------------------
def _part_name(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        name = part.get("name") or str(part.get("_target_", "")).rsplit(".", 1)[-1]
        return name or None
    return None


def split_method(results: dict[str, Any]) -> tuple[str, str] | None:
    """(editor, inversion) of an inversion x editor run: from its ``inversion`` / ``editor`` settings, else from
    a method name ``editor+inversion`` (``inversion+editor`` is recognised by the inversion's name)."""
    settings = results.get("method_settings") or {}
    editor, inversion = _part_name(settings.get("editor")), _part_name(settings.get("inversion"))
    if editor and inversion:
        return editor, inversion
    name = str(results.get("method", ""))
    if name.count("+") != 1:
        return None
    a, b = (s.strip() for s in name.split("+"))
    if not a or not b:
        return None
    if a.lower() in KNOWN_INVERSIONS and b.lower() not in KNOWN_INVERSIONS:
        return b, a
    return a, b


def metric_family(name: str) -> str:
    """Column group of a metric (PIE-Bench's grouping: structure, background preservation, CLIP similarity)."""
    n = name.lower()
    if n in COST_COLUMNS or n.startswith(("s/edit", "peak")):
        return "cost"
    if "structure" in n:
        return "structure"
    if n.startswith(("fid", "kid")):
        return "distribution"
    if n.startswith("gt_"):
        return "ground truth"
    if n == "edit_acc":
        return "edit accuracy"
    if n.startswith(("bg_", "pie_psnr", "pie_mse", "pie_ssim", "pie_lpips", "lpips")) or n in ("preservation",
                                                                                             "clip_i"):
        return "preservation"
    if n.startswith(("clip", "pie_clip")):
        return "text alignment"
    return "other"


def _family_rank(name: str) -> tuple[int, str]:
    return FAMILY_ORDER.index(metric_family(name)), name


MAIN_METRIC_PREFERENCE = {
    "text alignment": ("pie_clip_whole", "clip_score", "pie_clip_edited", "clip_edited", "clip_dir"),
    "edit accuracy": ("edit_acc",),
    "structure": ("pie_structure", "structure"),
    "preservation": ("pie_psnr_unedit", "bg_psnr", "preservation", "bg_ssim", "pie_ssim_unedit", "clip_i"),
    "ground truth": ("gt_psnr", "gt_ssim", "gt_clip_i"),
}


def main_metrics(long: pd.DataFrame, limit: int = 4) -> list[str]:
    """The main per-sample quality metrics present with finite values: one per family, by preference."""
    if long.empty:
        return []
    finite = long[np.isfinite(long["value"].astype(float))]
    available = list(dict.fromkeys(finite["metric"]))
    out = []
    for prefs in MAIN_METRIC_PREFERENCE.values():
        for pref in prefs:
            hit = next((m for m in available if m == pref or m.startswith(pref + "_dist")), None)
            if hit is not None:
                out.append(hit)
                break
    return out[:limit]


# --------------------------------------------------------------------------------------------------------
# The table model
# --------------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One table cell: its plain text plus the marks the renderers turn into bold / dagger."""

    text: str
    value: float = float("nan")
    best: bool = False
    worse: bool = False

    def plain(self) -> str:
        return self.text + (" †" if self.worse else "")

    def markdown(self) -> str:
        text = f"**{self.text}**" if self.best else self.text
        return text + (" †" if self.worse else "")


@dataclass
class TableModel:
    """Everything the renderers need: rows (meta + cells), column groups, the long per-sample values."""

    runs: list[LoadedRun]
    meta_columns: list[str]
    columns: list[str]
    families: dict[str, str]
    rows: list[dict[str, Any]]
    long: pd.DataFrame
    paired: pd.DataFrame
    higher: dict[str, bool]
    scale: dict[str, float]
    metric_of: dict[str, str] = field(default_factory=dict)

    def frame(self, style: str = "markdown") -> pd.DataFrame:
        """Rows as a DataFrame of strings (``markdown`` marks the best in bold, ``plain`` does not)."""
        out = []
        for row in self.rows:
            r = {c: row["meta"][c] for c in self.meta_columns}
            for c in self.columns:
                cell: Cell = row["cells"][c]
                r[c] = cell.markdown() if style == "markdown" else cell.plain()
            out.append(r)
        return pd.DataFrame(out, columns=[*self.meta_columns, *self.columns])


def _column(name: str, higher: bool, scale: float) -> str:
    suffix = f" ×1e{int(round(np.log10(scale)))}" if scale != 1.0 else ""
    return f"{name}{suffix} {'↑' if higher else '↓'}"


def _digits(mean: float) -> int:
    return 2 if abs(mean) >= 1 else 4


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return "–"
    digits = _digits(mean)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_ci(agg: dict[str, Any], k: float) -> tuple[str, float]:
    """``mean ± half-width`` of the stored bootstrap 95% CI (scaled by ``k``), and the scaled mean."""
    n, mean = int(agg.get("n") or 0), agg.get("mean")
    if n == 0 or mean is None or not np.isfinite(mean):
        return "–", float("nan")
    lo, hi = agg.get("ci_low"), agg.get("ci_high")
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        half = (hi - lo) / 2
    else:
        std = agg.get("std")
        half = 1.96 * std / math.sqrt(n) if std is not None and np.isfinite(std) and n > 1 else 0.0
    mean_k, half_k = mean * k, half * k
    digits = _digits(mean_k)
    return (f"{mean_k:.{digits}f}" if n == 1 else f"{mean_k:.{digits}f} ± {half_k:.{digits}f}"), mean_k


def _agg(res: dict[str, Any], name: str, values: np.ndarray, higher: bool) -> dict[str, Any]:
    """The stored aggregate of a metric, recomputed from the samples when it lacks a confidence interval."""
    agg = (res.get("metrics") or {}).get(name)
    if agg is not None and "ci_low" in agg:
        return agg
    from editlab.bench.stats import summarize

    return summarize(values, higher)


def _paired_lookup(paired: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for rec in paired.to_dict("records") if not paired.empty else []:
        out[(rec["metric"], rec["method_a"], rec["method_b"])] = rec
        out[(rec["metric"], rec["method_b"], rec["method_a"])] = rec
    return out


def mark_best(cells: dict[str, Cell], higher: bool, metric: str | None = None,
              paired: dict[tuple[str, str, str], dict[str, Any]] | None = None) -> None:
    """Mark the best mean among ``cells`` (label -> cell) and, given paired tests, those significantly worse."""
    finite = {k: c.value for k, c in cells.items() if np.isfinite(c.value)}
    if len(finite) < 2:
        return
    best_value = max(finite.values()) if higher else min(finite.values())
    best = [k for k, v in finite.items() if v == best_value]
    for k in best:
        cells[k].best = True
    if paired is None or metric is None:
        return
    for k in finite:
        if k in best:
            continue
        cells[k].worse = any(paired_winner(paired.get((metric, b, k))) == b for b in best)


def paired_winner(test: dict[str, Any] | None) -> str | None:
    """The method a significant paired test found better (its label), else None."""
    if test is None or not test.get("significant"):
        return None
    return {"a": test["method_a"], "b": test["method_b"]}.get(test.get("better"))


def build_model(run_dirs: list[Path] | list[LoadedRun]) -> TableModel:
    """Load runs and build the main table with best / significance marks."""
    runs = [r if isinstance(r, LoadedRun) else None for r in run_dirs]
    if any(r is None for r in runs):
        runs = load_runs([Path(d) for d in run_dirs])  # type: ignore[arg-type]
    higher: dict[str, bool] = {}
    scale: dict[str, float] = {}
    dataset_level: set[str] = set()
    for run in runs:
        for name, d in run.definitions().items():
            higher[name] = d.get("higher_is_better", True)
            scale[name] = d.get("scale", 1.0)
            if d.get("per_sample") is False:
                dataset_level.add(name)
    metric_names = sorted(set(higher) - dataset_level, key=_family_rank)
    several = len({run.dataset for run in runs}) > 1
    long_rows = []
    for run in runs:
        for rec in run.records:
            if rec.get("status") != "ok" or rec.get("scored") is False:  # unscored: e.g. a final turn's earlier turns
                continue
            # with several datasets, sample ids are qualified so that paired tests never pair across datasets
            sid = f"{run.dataset}/{rec['id']}" if several else rec["id"]
            for name, v in (rec.get("metrics") or {}).items():
                long_rows.append({"method": run.label, "sample_id": sid, "task_type": rec.get("task_type"),
                                  "metric": name, "value": np.nan if v is None else v})
    long = pd.DataFrame(long_rows, columns=["method", "sample_id", "task_type", "metric", "value"])
    long["value"] = long["value"].astype(float)
    long.attrs["higher"] = higher
    paired = paired_table(long)
    lookup = _paired_lookup(paired)

    composite = any(run.parts for run in runs)
    meta_columns = (["learning strategy"] + (["dataset"] if several else []) + ["method"]
                    + (["inversion", "editor"] if composite else []))
    columns, families, metric_of = [], {}, {}
    for name in metric_names + sorted(dataset_level, key=_family_rank):
        col = _column(name, higher[name], scale[name])
        columns.append(col)
        families[col] = metric_family(name)
        metric_of[col] = name
    for col in COST_COLUMNS:
        columns.append(col)
        families[col] = "cost"

    rows = []
    for run in runs:
        res = run.results
        parts = run.parts
        meta = {"learning strategy": run.strategy, "dataset": run.dataset, "method": run.label}
        if composite:
            meta |= {"inversion": parts[1] if parts else "", "editor": parts[0] if parts else ""}
        cells: dict[str, Cell] = {}
        mine = long[long["method"] == run.label]
        for name in metric_names:
            col = _column(name, higher[name], scale[name])
            vals = mine.loc[mine["metric"] == name, "value"].to_numpy(dtype=float)
            if name not in (res.get("metrics") or {}) and vals.size == 0:
                cells[col] = Cell("–")
                continue
            text, value = _fmt_ci(_agg(res, name, vals, higher[name]), scale[name])
            cells[col] = Cell(text, value)
        for name in sorted(dataset_level, key=_family_rank):
            col = _column(name, higher[name], scale[name])
            d = (res.get("dataset_metrics") or {}).get(name) or {}
            value = d.get("value")
            if value is None or not np.isfinite(value):
                cells[col] = Cell("–")
                continue
            text = f"{value * scale[name]:.4g}"
            if d.get("std") is not None and np.isfinite(d["std"]):
                text += f" ± {d['std'] * scale[name]:.2g}"
            cells[col] = Cell(text, value * scale[name])
        agg = res.get("metrics") or {}
        t = agg.get("wall_time_s", {"mean": float("nan"), "std": 0, "n": 0})
        m = agg.get("peak_mem_mb", {"mean": float("nan"), "std": 0, "n": 0})
        cells["s/edit ↓"] = Cell(_fmt(t["mean"], t["std"], t["n"]), t["mean"] if t["n"] else float("nan"))
        cells["peak MB ↓"] = Cell("–" if m["n"] == 0 else f"{m['mean']:.0f}", m["mean"] if m["n"] else float("nan"))
        c = res["counts"]
        cells["ok/err/n.a."] = Cell(f"{c['ok']}/{c['error']}/{c['not_applicable']}")
        rows.append({"meta": meta, "cells": cells, "run": run})

    # a metric no run defines for any sample only widens the table
    columns = [c for c in columns if families[c] == "cost" or any(r["cells"][c].text != "–" for r in rows)]
    order = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    rows.sort(key=lambda r: (order.get(r["meta"]["learning strategy"], len(order)), r["meta"]["dataset"],
                             r["meta"]["method"]))
    for col in columns:
        if col == "ok/err/n.a.":
            continue
        name = metric_of.get(col)
        is_higher = higher[name] if name else False
        for dataset in sorted({r["meta"]["dataset"] for r in rows}):  # the best is the best on one dataset
            cells = {r["meta"]["method"]: r["cells"][col] for r in rows if r["meta"]["dataset"] == dataset}
            mark_best(cells, is_higher, name if name in metric_names else None, lookup)
    return TableModel(runs=[r["run"] for r in rows], meta_columns=meta_columns, columns=columns, families=families,
                      rows=rows, long=long, paired=paired, higher=higher, scale=scale, metric_of=metric_of)


def build_table(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(formatted table, numeric long table of per-sample values) over the given run folders."""
    model = build_model(run_dirs)
    return model.frame("markdown"), model.long


def paired_table(long: pd.DataFrame) -> pd.DataFrame:
    """Every pair of methods on every per-sample metric: paired bootstrap CI of the mean difference and a
    Wilcoxon signed-rank p-value over the samples both methods edited (see :mod:`editlab.bench.stats`)."""
    from editlab.bench.stats import pairwise_table

    if long.empty or long["method"].nunique() < 2:
        return pd.DataFrame()
    higher = long.attrs.get("higher", {})
    return pairwise_table(long[["method", "sample_id", "metric", "value"]], {m: higher.get(m, True) for m in
                                                                            long["metric"].unique()})


# --------------------------------------------------------------------------------------------------------
# Per-task-type and inversion x editor tables
# --------------------------------------------------------------------------------------------------------
def _pick_metric(long: pd.DataFrame, metric: str | None) -> str | None:
    if long.empty:
        return None
    finite = long[np.isfinite(long["value"])]
    available = list(dict.fromkeys(finite["metric"])) or list(dict.fromkeys(long["metric"]))
    if metric is not None:
        return metric
    return next((m for m in TASK_METRIC_PREFERENCE if m in available), available[0])


def task_table(long: pd.DataFrame, metric: str | None = None) -> tuple[str | None, pd.DataFrame]:
    """Mean of one metric per method and survey task type (columns ordered semantic, stylistic, structural)."""
    metric = _pick_metric(long, metric)
    if metric is None:
        return None, pd.DataFrame()
    sub = long[(long["metric"] == metric) & long["value"].notna() & long["task_type"].notna()]
    sub = sub[sub["task_type"].isin([t.value for t in TaskType])]
    if sub.empty:
        return metric, pd.DataFrame()
    pivot = sub.pivot_table(index="method", columns="task_type", values="value", aggfunc="mean")
    cols = [t.value for t in TaskType if t.value in pivot.columns]
    pivot = pivot[cols]
    pivot.columns = pd.MultiIndex.from_tuples([(TaskType(c).family.value, c) for c in cols])
    return metric, pivot.round(3)


def task_cells(long: pd.DataFrame, metric: str, pivot: pd.DataFrame, higher: bool,
               scale: float = 1.0) -> dict[tuple[str, str], Cell]:
    """Cells of the per-task table: scaled mean, best per task type, and paired tests against that best
    over the task type's samples."""
    from editlab.bench.stats import paired_comparison

    cells: dict[tuple[str, str], Cell] = {}
    sub = long[(long["metric"] == metric) & long["value"].notna()]
    for fam, task in pivot.columns:
        col: dict[str, Cell] = {}
        for method in pivot.index:
            v = pivot.loc[method, (fam, task)]
            value = float(v) * scale if pd.notna(v) else float("nan")
            col[method] = Cell("–" if not np.isfinite(value) else f"{value:.{_digits(value)}f}", value)
        mark_best(col, higher)
        best = [m for m, c in col.items() if c.best]
        in_task = sub[sub["task_type"] == task]
        for method, cell in col.items():
            if cell.best or not np.isfinite(cell.value) or not best:
                continue
            mine = in_task[in_task["method"] == method].set_index("sample_id")["value"]
            for b in best:
                theirs = in_task[in_task["method"] == b].set_index("sample_id")["value"]
                if paired_comparison(theirs, mine, higher)["better"] == "a":  # the best won, significantly
                    cell.worse = True
        for method, cell in col.items():
            cells[(method, task)] = cell
    return cells


def grid_table(model: TableModel, metric: str, dataset: str | None = None) -> pd.DataFrame:
    """Inversion (rows) x editor (columns) grid of one metric's mean (scaled) on one dataset (default: the only
    one): best cell in bold, a dagger where the paired test against the best is significant."""
    cells: dict[str, Cell] = {}
    where: dict[str, tuple[str, str]] = {}
    for row in model.rows:
        parts = row["run"].parts
        label = row["meta"]["method"]
        if dataset is not None and row["meta"]["dataset"] != dataset:
            continue
        if not parts or parts[::-1] in where.values():
            continue
        vals = model.long[(model.long["method"] == label) & (model.long["metric"] == metric)]["value"].dropna()
        if vals.empty:
            continue
        value = vals.mean() * model.scale.get(metric, 1.0)
        cells[label] = Cell(f"{value:.{_digits(value)}f}", value)
        where[label] = (parts[1], parts[0])
    if len(cells) < 2:
        return pd.DataFrame()
    mark_best(cells, model.higher.get(metric, True), metric, _paired_lookup(model.paired))
    inversions = sorted({i for i, _ in where.values()})
    editors = sorted({e for _, e in where.values()})
    out = pd.DataFrame("–", index=pd.Index(inversions, name="inversion"), columns=pd.Index(editors, name="editor"))
    for label, (i, e) in where.items():
        out.loc[i, e] = cells[label].markdown()
    return out


# --------------------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------------------
def _family_groups(columns: list[str], families: dict[str, str]) -> list[tuple[str, list[str]]]:
    groups: list[tuple[str, list[str]]] = []
    for c in columns:
        fam = families.get(c, "")
        if groups and groups[-1][0] == fam:
            groups[-1][1].append(c)
        else:
            groups.append((fam, [c]))
    return groups


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "×": r"$\times$", "–": "--",
                  "†": r"$^\dagger$", "·": r"$\cdot$", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(header_groups: list[tuple[str, int]] | None, header: list[str], body: list[list[Cell | str]],
                group_rows: dict[int, str] | None = None, align: str | None = None) -> str:
    """A booktabs tabular: optional grouped header (label, span), the header, rows of cells (bold best,
    dagger for significantly worse) and optional group rows inserted before body row indices."""
    ncol = len(header)
    lines = [rf"\begin{{tabular}}{{{align or 'l' * ncol}}}", r"\toprule"]
    if header_groups:
        parts, rules, start = [], [], 1
        for label, span in header_groups:
            parts.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}" if span > 1 else latex_escape(label))
            if label:
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines.append(" & ".join(parts) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(body):
        if group_rows and i in group_rows:
            if i:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{latex_escape(group_rows[i])}}}}} \\")
        out = []
        for cell in row:
            if isinstance(cell, Cell):
                text = latex_escape(cell.text)
                text = rf"\textbf{{{text}}}" if cell.best else text
                out.append(text + (r"$^\dagger$" if cell.worse else ""))
            else:
                out.append(latex_escape(cell))
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _model_latex(model: TableModel) -> str:
    if not model.rows:
        return ""
    meta = [c for c in model.meta_columns if c != "learning strategy"]
    groups = [("", len(meta))] + [(f, len(cols)) for f, cols in _family_groups(model.columns, model.families)]
    body, group_rows, last = [], {}, None
    for i, row in enumerate(model.rows):
        strategy = row["meta"]["learning strategy"]
        if strategy != last:
            group_rows[i] = strategy
            last = strategy
        body.append([row["meta"][c] for c in meta] + [row["cells"][c] for c in model.columns])
    return latex_table(groups, meta + model.columns, body, group_rows, "l" * len(meta) + "r" * len(model.columns))


def _model_html(model: TableModel) -> str:
    from editlab.reports.html import cell_html, esc

    if not model.rows:
        return "<p>(no results)</p>"
    meta = [c for c in model.meta_columns if c != "learning strategy"]
    groups = _family_groups(model.columns, model.families)
    head1 = f'<th colspan="{len(meta)}"></th>' + "".join(
        f'<th colspan="{len(cols)}" class="group">{esc(fam)}</th>' for fam, cols in groups)
    head2 = "".join(f"<th>{esc(c)}</th>" for c in meta + model.columns)
    body, last = [], None
    for row in model.rows:
        strategy = row["meta"]["learning strategy"]
        if strategy != last:
            span = len(meta) + len(model.columns)
            body.append(f'<tr class="strategy"><td colspan="{span}">{esc(strategy)}</td></tr>')
            last = strategy
        tds = "".join(f"<td>{esc(row['meta'][c])}</td>" for c in meta)
        tds += "".join(cell_html(row["cells"][c]) for c in model.columns)
        body.append(f"<tr>{tds}</tr>")
    return (f'<table class="results"><thead><tr>{head1}</tr><tr>{head2}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _tasks_render(long: pd.DataFrame, metric: str, tasks: pd.DataFrame, higher: bool,
                  scale: float) -> tuple[str, str, str, pd.DataFrame]:
    """(markdown, latex, html, csv frame) of the per-task table."""
    from editlab.reports.html import cell_html, esc

    cells = task_cells(long, metric, tasks, higher, scale)
    flat_cols = [f"{fam} · {task}" for fam, task in tasks.columns]
    md_rows = [[m] + [cells[(m, t)].markdown() for _, t in tasks.columns] for m in tasks.index]
    md = pd.DataFrame(md_rows, columns=["method", *flat_cols]).to_markdown(index=False)
    fam_groups: list[tuple[str, int]] = [("", 1)]
    for fam, _ in tasks.columns:
        if fam_groups[-1][0] == fam:
            fam_groups[-1] = (fam, fam_groups[-1][1] + 1)
        else:
            fam_groups.append((fam, 1))
    body = [[m] + [cells[(m, t)] for _, t in tasks.columns] for m in tasks.index]
    latex = latex_table(fam_groups, ["method"] + [t for _, t in tasks.columns], body,
                        align="l" + "r" * len(tasks.columns))
    head1 = "".join(f'<th colspan="{n}" class="group">{esc(f)}</th>' if f else f'<th colspan="{n}"></th>'
                    for f, n in fam_groups)
    head2 = "<th>method</th>" + "".join(f"<th>{esc(t)}</th>" for _, t in tasks.columns)
    rows = "".join(f"<tr><td>{esc(m)}</td>" + "".join(cell_html(cells[(m, t)]) for _, t in tasks.columns) + "</tr>"
                   for m in tasks.index)
    html = f'<table class="results"><thead><tr>{head1}</tr><tr>{head2}</tr></thead><tbody>{rows}</tbody></table>'
    csv = pd.DataFrame([[m] + [cells[(m, t)].plain() for _, t in tasks.columns] for m in tasks.index],
                       columns=["method", *flat_cols])
    return md, latex, html, csv


def numeric_table(model: TableModel) -> pd.DataFrame:
    """Long numeric summary (unscaled): one row per method and metric, with CI and worst decile."""
    rows = []
    for row in model.rows:
        run = row["run"]
        parts = run.parts
        for name, agg in sorted((run.results.get("metrics") or {}).items()):
            rows.append({
                "method": run.label, "learning_strategy": run.strategy, "dataset": run.dataset,
                "inversion": parts[1] if parts else None, "editor": parts[0] if parts else None,
                "metric": name, "family": metric_family(name), "higher_is_better": model.higher.get(name, False),
                "scale": model.scale.get(name, 1.0),
                **{k: agg.get(k) for k in ("mean", "std", "n", "nan", "ci_low", "ci_high", "worst_decile")},
            })
    return pd.DataFrame(rows)


def render_tables(run_dirs: list[Path], out_dir: Path | None = None, task_metric: str | None = None) -> dict[str, str]:
    """Render the comparison tables as Markdown, CSV, LaTeX and HTML; write them to ``out_dir``.

    Returns ``markdown`` (everything: main table, per-task table, inversion x editor grids, paired-test
    summary, paper comparison), ``csv`` and ``latex`` (the main table) and ``html`` (a full page).
    """
    return render_model(build_model(run_dirs), out_dir, task_metric)


def render_model(model: TableModel, out_dir: Path | None = None, task_metric: str | None = None) -> dict[str, str]:
    """:func:`render_tables` for an already built :class:`TableModel`."""
    from editlab.reports.html import page
    from editlab.reports.paper import compare_with_papers

    long = model.long
    table = model.frame("markdown")
    md = table.to_markdown(index=False) if not table.empty else "(no results)"
    html_parts = [f"<h2>Methods by learning strategy</h2>{_model_html(model)}"]
    if len(model.rows) > 1:
        groups = "; ".join(f"{fam}: {', '.join(cols)}" for fam, cols in _family_groups(model.columns, model.families))
        md += f"\n\n{SIGNIFICANCE_NOTE}. Column groups: {groups}"
        html_parts.append(f"<p class=note>{_note_html()}</p>")
    out = {"csv": model.frame("plain").to_csv(index=False), "latex": _model_latex(model)}
    files: dict[str, str] = {}

    metric, tasks = task_table(long, task_metric)
    if not tasks.empty and metric is not None:
        arrow = "↑" if model.higher.get(metric, True) else "↓"
        k = model.scale.get(metric, 1.0)
        suffix = f" (×1e{int(round(np.log10(k)))})" if k != 1.0 else ""
        t_md, t_tex, t_html, t_csv = _tasks_render(long, metric, tasks, model.higher.get(metric, True), k)
        title = f"Per task type: mean {metric}{suffix} {arrow}"
        md += f"\n\n{title}\n\n{t_md}"
        html_parts.append(f"<h2>{_esc(title)}</h2>{t_html}")
        files["table_tasks.csv"] = t_csv.to_csv(index=False)
        files["table_tasks.tex"] = t_tex

    datasets = sorted({r["meta"]["dataset"] for r in model.rows})
    for m, dataset in ((m, d) for d in datasets for m in main_metrics(long)):
        grid = grid_table(model, m, dataset)
        if grid.empty:
            continue
        title = f"Inversion × editor: mean {m} {'↑' if model.higher.get(m, True) else '↓'}"
        title += f" ({dataset})" if len(datasets) > 1 else ""
        md += f"\n\n{title}\n\n{grid.to_markdown()}"
        html_parts.append(f"<h2>{_esc(title)}</h2>{_grid_html(grid)}")

    paired = model.paired
    if not paired.empty:
        sig = paired[paired["significant"]]
        md += f"\n\nPaired comparisons (bootstrap 95% CI and Wilcoxon, same samples): {len(sig)} of {len(paired)} "
        md += "method pairs x metrics differ significantly; see paired.csv"
        html_parts.append(f"<h2>Paired comparisons</h2><p>{len(sig)} of {len(paired)} method pairs × metrics differ "
                          "significantly (paired.csv lists all).</p>")

    comparison = compare_with_papers(model.runs)
    if comparison is not None:
        md += f"\n\n{comparison.markdown}"
        html_parts.append(comparison.html)
        files["paper_comparison.md"] = comparison.markdown + "\n"
        files["paper_comparison.csv"] = comparison.frame.to_csv(index=False)

    out["markdown"] = md
    out["html"] = page("Comparison tables", "".join(html_parts))
    if out_dir is not None:
        out_dir = Path(out_dir)
        if not paired.empty:
            atomic_write_text(out_dir / "paired.csv", paired.to_csv(index=False))
        atomic_write_text(out_dir / "table.md", md + "\n")
        atomic_write_text(out_dir / "table.csv", out["csv"])
        atomic_write_text(out_dir / "table.tex", out["latex"])
        atomic_write_text(out_dir / "table.html", out["html"])
        numeric = numeric_table(model)
        if not numeric.empty:
            atomic_write_text(out_dir / "table_numeric.csv", numeric.to_csv(index=False))
        for name, text in files.items():
            atomic_write_text(out_dir / name, text)
    return out


def _esc(text: str) -> str:
    from editlab.reports.html import esc

    return esc(text)


def _note_html() -> str:
    return ("<strong>bold</strong>: best mean of the column; †: significantly worse than that best (paired bootstrap "
            "95% CI of the mean difference excludes 0 and Wilcoxon p &lt; 0.05, samples both edited); ± is the "
            "half-width of the bootstrap 95% CI of the mean.")


def _grid_html(grid: pd.DataFrame) -> str:
    from editlab.reports.html import esc

    head = "<th>inversion \\ editor</th>" + "".join(f"<th>{esc(c)}</th>" for c in grid.columns)
    rows = []
    for inv, row in grid.iterrows():
        tds = []
        for v in row:
            text = str(v)
            sig = '<sup class="sig">†</sup>' if text.endswith(" †") else ""
            text = text.removesuffix(" †")
            bold = text.startswith("**")
            tds.append(f"<td><strong>{esc(text[2:-2])}</strong></td>" if bold else f"<td>{esc(text)}{sig}</td>")
        rows.append(f"<tr><td>{esc(inv)}</td>{''.join(tds)}</tr>")
    return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
