"""Comparison tables from stored results (no models needed).

Rows are methods grouped by the survey's learning strategy; columns are metrics with an arrow for their
direction, ``mean ± std`` over the samples where the metric is defined, plus runtime, peak memory and
sample counts. An optional per-task-type table shows one metric per survey task type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from editlab.bench.cache import atomic_write_text
from editlab.types import LearningStrategy, TaskType

STRATEGY_ORDER = [s.value for s in (LearningStrategy.TRAINING_BASED, LearningStrategy.TESTING_TIME_FINETUNING,
                                    LearningStrategy.TRAINING_FREE)]
TASK_METRIC_PREFERENCE = ("edit_acc", "clip_score", "bg_psnr")


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
    results = json.loads((run_dir / "results.json").read_text())
    lines = (run_dir / "samples.jsonl").read_text().splitlines() if (run_dir / "samples.jsonl").exists() else []
    return results, [json.loads(line) for line in lines if line]


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
        labels.append(f"{res['method']} ({', '.join(parts)})" if parts else f"{res['method']} [{res['run_key']}]")
    return labels


def _column(name: str, higher: bool, scale: float) -> str:
    suffix = f" ×1e{int(round(np.log10(scale)))}" if scale != 1.0 else ""
    return f"{name}{suffix} {'↑' if higher else '↓'}"


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return "–"
    digits = 2 if abs(mean) >= 1 else 4
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def build_table(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(formatted table, numeric long table of per-sample values) over the given run folders."""
    loaded = [load_run(d) for d in run_dirs]
    results = [r for r, _ in loaded]
    labels = _labels(results)
    higher: dict[str, bool] = {}
    scale: dict[str, float] = {}
    dataset_level: set[str] = set()
    for res in results:
        for name, d in res.get("metric_definitions", {}).items():
            higher[name] = d.get("higher_is_better", True)
            scale[name] = d.get("scale", 1.0)
            if d.get("per_sample") is False:
                dataset_level.add(name)
    metric_names = sorted(set(higher) - dataset_level)
    rows, long_rows = [], []
    for label, res, (_, records) in zip(labels, results, loaded):
        agg = res["metrics"]
        row: dict[str, Any] = {"learning strategy": res["taxonomy"]["learning_strategy"], "method": label}
        for name in metric_names:
            a = agg.get(name, {"mean": float("nan"), "std": float("nan"), "n": 0})
            k = scale[name]
            row[_column(name, higher[name], k)] = _fmt(a["mean"] * k, a["std"] * k, a["n"])
        for name in sorted(dataset_level):
            d = (res.get("dataset_metrics") or {}).get(name) or {}
            value = d.get("value")
            cell = "–" if value is None or not np.isfinite(value) else f"{value:.4g}"
            if cell != "–" and d.get("std") is not None and np.isfinite(d["std"]):
                cell += f" ± {d['std']:.2g}"
            row[_column(name, higher[name], scale[name])] = cell
        t = agg.get("wall_time_s", {"mean": float("nan"), "std": 0, "n": 0})
        m = agg.get("peak_mem_mb", {"mean": float("nan"), "std": 0, "n": 0})
        row["s/edit ↓"] = _fmt(t["mean"], t["std"], t["n"])
        row["peak MB ↓"] = "–" if m["n"] == 0 else f"{m['mean']:.0f}"
        c = res["counts"]
        row["ok/err/n.a."] = f"{c['ok']}/{c['error']}/{c['not_applicable']}"
        rows.append(row)
        for rec in records:
            if rec.get("status") != "ok":
                continue
            for name, v in (rec.get("metrics") or {}).items():
                long_rows.append({"method": label, "sample_id": rec["id"], "task_type": rec.get("task_type"),
                                  "metric": name, "value": np.nan if v is None else v})
    table = pd.DataFrame(rows)
    if not table.empty:
        order = {s: i for i, s in enumerate(STRATEGY_ORDER)}
        table["_o"] = table["learning strategy"].map(order)
        table = table.sort_values(["_o", "method"], kind="stable").drop(columns="_o").reset_index(drop=True)
    long = pd.DataFrame(long_rows, columns=["method", "sample_id", "task_type", "metric", "value"])
    long.attrs["higher"] = higher
    return table, long


def paired_table(long: pd.DataFrame) -> pd.DataFrame:
    """Every pair of methods on every per-sample metric: paired bootstrap CI of the mean difference and a
    Wilcoxon signed-rank p-value over the samples both methods edited (see :mod:`editlab.bench.stats`)."""
    from editlab.bench.stats import pairwise_table

    if long.empty or long["method"].nunique() < 2:
        return pd.DataFrame()
    higher = long.attrs.get("higher", {})
    return pairwise_table(long[["method", "sample_id", "metric", "value"]], {m: higher.get(m, True) for m in
                                                                            long["metric"].unique()})


def task_table(long: pd.DataFrame, metric: str | None = None) -> tuple[str | None, pd.DataFrame]:
    """Mean of one metric per method and survey task type (columns ordered semantic, stylistic, structural)."""
    if long.empty:
        return None, pd.DataFrame()
    available = list(dict.fromkeys(long["metric"]))
    if metric is None:
        metric = next((m for m in TASK_METRIC_PREFERENCE if m in available), available[0])
    sub = long[(long["metric"] == metric) & long["value"].notna()]
    if sub.empty:
        return metric, pd.DataFrame()
    pivot = sub.pivot_table(index="method", columns="task_type", values="value", aggfunc="mean")
    cols = [t.value for t in TaskType if t.value in pivot.columns]
    pivot = pivot[cols]
    pivot.columns = pd.MultiIndex.from_tuples([(TaskType(c).family.value, c) for c in cols])
    return metric, pivot.round(3)


def render_tables(run_dirs: list[Path], out_dir: Path | None = None, task_metric: str | None = None) -> dict[str, str]:
    """Render the comparison table (and per-task table) as Markdown, CSV and LaTeX; write them to ``out_dir``."""
    table, long = build_table(run_dirs)
    metric, tasks = task_table(long, task_metric)
    md = table.to_markdown(index=False) if not table.empty else "(no results)"
    if not tasks.empty:
        flat = tasks.copy()
        flat.columns = [c for _, c in flat.columns]
        md += f"\n\nPer task type: mean {metric}\n\n" + flat.to_markdown()
    out = {
        "markdown": md,
        "csv": table.to_csv(index=False),
        "latex": table.to_latex(index=False, escape=True) if not table.empty else "",
    }
    paired = paired_table(long)
    if not paired.empty:
        sig = paired[paired["significant"]]
        md += f"\n\nPaired comparisons (bootstrap 95% CI and Wilcoxon, same samples): {len(sig)} of {len(paired)} "
        md += "method pairs x metrics differ significantly; see paired.csv"
    if out_dir is not None:
        out_dir = Path(out_dir)
        if not paired.empty:
            atomic_write_text(out_dir / "paired.csv", paired.to_csv(index=False))
        atomic_write_text(out_dir / "table.md", md + "\n")
        atomic_write_text(out_dir / "table.csv", out["csv"])
        atomic_write_text(out_dir / "table.tex", out["latex"])
        if not tasks.empty:
            atomic_write_text(out_dir / "table_tasks.csv", tasks.to_csv())
    return out
