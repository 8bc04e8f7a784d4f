"""Figures from stored results (matplotlib, PNG and SVG).

- ``quality_vs_runtime``: one panel per main quality metric, mean with its 95% CI against seconds per edit;
  the Pareto front (no other method is both faster and better) is drawn and its points ringed;
- ``tasks_<metric>``: per-task-type bars (mean per method and task type);
- ``spread_<metric>``: box plot of the per-sample values of each method (points overlaid);
- ``grid_<metric>``: inversion x editor heat map, when several runs are inversion x editor methods.

Figures use matplotlib's object API (no global pyplot state) and write SVGs without a date, so re-rendering
the same results gives the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from editlab.files import safe_name
from editlab.types import TaskType

matplotlib.rcParams["svg.hashsalt"] = "editlab"
FORMATS = ("png", "svg")


def pareto_front(times: list[float], quality: list[float], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point dominates (at most as slow and at least as good, one strictly),
    ordered by time. Points with a non-finite coordinate are never on the front."""
    pts = [(t, q if higher_is_better else -q, i) for i, (t, q) in enumerate(zip(times, quality))
           if np.isfinite(t) and np.isfinite(q)]
    front = []
    for t, q, i in pts:
        dominated = any((t2 <= t and q2 >= q) and (t2 < t or q2 > q) for t2, q2, _ in pts)
        if not dominated:
            front.append((t, i))
    return [i for _, i in sorted(front)]


def _save(fig: Figure, out_dir: Path, stem: str, formats: tuple[str, ...]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        meta: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
        fig.savefig(path, format=fmt, dpi=120, bbox_inches="tight", metadata=meta)
        paths.append(path)
    return paths


def _label(metric: str, model: Any) -> str:
    k = model.scale.get(metric, 1.0)
    suffix = f" (×1e{int(round(np.log10(k)))})" if k != 1.0 else ""
    return f"{metric}{suffix} {'↑' if model.higher.get(metric, True) else '↓'}"


def quality_vs_runtime(model: Any, metrics: list[str], out_dir: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Quality (mean and 95% CI) against mean seconds per edit, one panel per metric, Pareto front marked."""
    if not metrics or not model.rows:
        return []
    fig = Figure(figsize=(4.6 * len(metrics), 4.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        k, higher = model.scale.get(metric, 1.0), model.higher.get(metric, True)
        labels, times, means, lows, highs = [], [], [], [], []
        for row in model.rows:
            agg = row["run"].results.get("metrics") or {}
            t, q = agg.get("wall_time_s") or {}, agg.get(metric) or {}
            if not t.get("n") or not q.get("n"):
                continue
            labels.append(row["meta"]["method"])
            times.append(float(t["mean"]))
            means.append(float(q["mean"]) * k)
            lows.append(float(q.get("ci_low", q["mean"])) * k)
            highs.append(float(q.get("ci_high", q["mean"])) * k)
        if not labels:
            ax.set_visible(False)
            continue
        m = np.array(means)
        yerr = np.vstack([np.clip(m - np.array(lows), 0, None), np.clip(np.array(highs) - m, 0, None)])
        ax.errorbar(times, means, yerr=yerr, fmt="o", color="#1f77b4", ecolor="#9ab", capsize=3, zorder=2)
        for x, y, name in zip(times, means, labels):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front(times, means, higher)
        if front:
            ax.plot([times[i] for i in front], [means[i] for i in front], "--", color="#d62728", lw=1, zorder=1,
                    label="Pareto front")
            ax.scatter([times[i] for i in front], [means[i] for i in front], s=140, facecolors="none",
                       edgecolors="#d62728", zorder=3)
            ax.legend(fontsize=7, loc="best")
        if min(times) > 0 and max(times) / min(times) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("seconds per edit ↓")
        ax.set_ylabel(_label(metric, model))
        ax.grid(alpha=.3)
    fig.suptitle("Quality vs runtime")
    return _save(fig, out_dir, "quality_vs_runtime", formats)


def task_bars(model: Any, metric: str, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Mean of ``metric`` per method and task type (grouped bars, semantic / stylistic / structural order)."""
    long = model.long
    sub = long[(long["metric"] == metric) & long["value"].notna() & long["task_type"].notna()]
    if sub.empty:
        return []
    tasks = [t.value for t in TaskType if t.value in set(sub["task_type"])]
    methods = [r["meta"]["method"] for r in model.rows if r["meta"]["method"] in set(sub["method"])]
    means = sub.groupby(["method", "task_type"])["value"].mean() * model.scale.get(metric, 1.0)
    fig = Figure(figsize=(max(4.0, 1.1 * len(tasks) * max(1, len(methods)) ** 0.5 + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(tasks))
    for j, method in enumerate(methods):
        ys = [means.get((method, t), np.nan) for t in tasks]
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, ys, width, label=method)
    ax.set_xticks(x, [f"{t}\n({TaskType(t).family.value})" for t in tasks], fontsize=7)
    ax.set_ylabel(_label(metric, model))
    ax.set_title(f"Per task type: {metric}")
    ax.legend(fontsize=7, ncols=min(3, len(methods)))
    ax.grid(axis="y", alpha=.3)
    return _save(fig, out_dir, f"tasks_{safe_name(metric)}", formats)


def spread(model: Any, metric: str, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Box plot of the per-sample values of ``metric`` per method, samples overlaid (quality levelling)."""
    long = model.long
    k = model.scale.get(metric, 1.0)
    data, names = [], []
    for row in model.rows:
        name = row["meta"]["method"]
        vals = long[(long["method"] == name) & (long["metric"] == metric)]["value"].dropna().to_numpy() * k
        if vals.size:
            data.append(vals)
            names.append(name)
    if not data:
        return []
    fig = Figure(figsize=(max(4.0, 0.9 * len(names) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    ax.boxplot(data, tick_labels=names, showmeans=True)
    rng = np.random.default_rng(0)
    for i, vals in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, vals.size), vals, s=8, alpha=.5, color="#555", zorder=3)
    ax.set_ylabel(_label(metric, model))
    ax.set_title(f"Spread over samples: {metric}")
    ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    ax.grid(axis="y", alpha=.3)
    return _save(fig, out_dir, f"spread_{safe_name(metric)}", formats)


def grid_heatmap(model: Any, metric: str, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Inversion x editor heat map of the mean of ``metric`` (greener is better)."""
    cells: dict[tuple[str, str], float] = {}
    k = model.scale.get(metric, 1.0)
    for row in model.rows:
        parts = row["run"].parts
        if not parts:
            continue
        vals = model.long[(model.long["method"] == row["meta"]["method"]) & (model.long["metric"] == metric)]
        vals = vals["value"].dropna()
        if not vals.empty:
            cells[(parts[1], parts[0])] = float(vals.mean()) * k
    if len(cells) < 2:
        return []
    inversions = sorted({i for i, _ in cells})
    editors = sorted({e for _, e in cells})
    grid = np.full((len(inversions), len(editors)), np.nan)
    for (i, e), v in cells.items():
        grid[inversions.index(i), editors.index(e)] = v
    fig = Figure(figsize=(1.3 * len(editors) + 2.5, 0.6 * len(inversions) + 1.8), layout="constrained")
    ax = fig.subplots()
    cmap = "RdYlGn" if model.higher.get(metric, True) else "RdYlGn_r"
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(editors)), editors)
    ax.set_yticks(range(len(inversions)), inversions)
    ax.set_xlabel("editor")
    ax.set_ylabel("inversion")
    for (r, c), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.3g}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label=_label(metric, model))
    ax.set_title(f"Inversion × editor: {metric}")
    return _save(fig, out_dir, f"grid_{safe_name(metric)}", formats)


def render_plots(model: Any, out_dir: Path, metrics: list[str] | None = None,
                 formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Every figure for a table model (:func:`editlab.bench.tables.build_model`) into ``out_dir``."""
    from editlab.bench.tables import main_metrics

    metrics = metrics or main_metrics(model.long)
    out_dir = Path(out_dir)
    paths = quality_vs_runtime(model, metrics, out_dir, formats)
    for metric in metrics:
        paths += task_bars(model, metric, out_dir, formats)
        paths += spread(model, metric, out_dir, formats)
        paths += grid_heatmap(model, metric, out_dir, formats)
    return paths
