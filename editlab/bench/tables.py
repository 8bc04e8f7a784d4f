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
FAMILY_ORDER = ("structure", "preservation", "text alignment", "edit accuracy", "judge", "ground truth",
                "distribution", "other", "cost")
#: Inversion names (editlab's and PIE-Bench's spellings) used to read ``a+b`` method names in either order.
KNOWN_INVERSIONS = {"ddim", "nti", "npi", "direct", "edict", "ddpm", "null-text", "null_text", "nt", "np",
                    "negative-prompt", "styled", "stylediffusion", "directinversion", "pnpinversion", "di"}
COST_COLUMNS = ("s/edit ↓", "peak MB ↓", "failed ↓", "ok/err/n.a.")


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


def metric_family(name: str, definition: dict[str, Any] | None = None) -> str:
    """Column group of a metric (PIE-Bench's grouping: structure, background preservation, CLIP similarity; a VLM
    judge's columns, recognised by their definition, form the ``judge`` group)."""
    if definition is not None and definition.get("judge_metric"):
        return "judge"
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
    if n.startswith(("bg_", "pie_psnr", "pie_mse", "pie_ssim", "pie_lpips", "lpips", "clip_i[", "src_", "dino[")) \
            or n in ("preservation", "clip_i", "l1", "l2"):
        return "preservation"
    if n.startswith(("clip", "pie_clip")):
        return "text alignment"
    return "other"


def _family_rank(name: str, definition: dict[str, Any] | None = None) -> tuple[int, str]:
    return FAMILY_ORDER.index(metric_family(name, definition)), name


MAIN_METRIC_PREFERENCE = {
    "text alignment": ("pie_clip_whole", "clip_score", "pie_clip_edited", "clip_edited", "clip_t", "clip_dir"),
    "edit accuracy": ("edit_acc",),
    "structure": ("pie_structure", "structure"),
    "preservation": ("pie_psnr_unedit", "bg_psnr", "preservation", "bg_ssim", "pie_ssim_unedit", "src_psnr", "l1",
                     "clip_i", "dino"),
    "judge": ("vie_o", "imgedit_score", "kris_if", "rise_score", "lmm_score", "judge_overall"),
    "ground truth": ("gt_psnr", "gt_ssim", "gt_clip_i"),
}


def _is_metric(name: str, base: str) -> bool:
    """Whether column ``name`` is metric ``base``, whatever model it names: ``clip_score[vit-l14]`` is
    ``clip_score``, ``pie_structure_dist[dino_vitb8]`` is ``pie_structure``."""
    return name == base or name.startswith((base + "[", base + "_dist["))


def main_metrics(long: pd.DataFrame, limit: int = 4) -> list[str]:
    """The main per-sample quality metrics present with finite values: one per family, by preference."""
    if long.empty:
        return []
    finite = long[np.isfinite(long["value"].astype(float))]
    available = list(dict.fromkeys(finite["metric"]))
    out = []
    for prefs in MAIN_METRIC_PREFERENCE.values():
        for pref in prefs:
            hit = next((m for m in available if _is_metric(m, pref)), None)
            if hit is not None:
                out.append(hit)
                break
    return out[:limit]


# --------------------------------------------------------------------------------------------------------
# The table model
# --------------------------------------------------------------------------------------------------------
FAILURE_POLICIES = ("common", "worst")


@dataclass
class TableOptions:
    """How a comparison is made (``report.*`` in the config, ``--failures/--correction/--alpha`` on the CLI).

    ``failures``: ``common`` compares methods on the samples every one of them edited and scored (the common
    set); ``worst`` scores every failed edit (and every metric that failed on an edit) with the metric's worst
    value (``EditMetric.worst``: 0 for ``edit_acc``, CLIP score and PSNR, -1 for SSIM, ...; the worst value
    observed in the comparison for unbounded metrics such as LPIPS, and the table says so), over the samples
    every method attempted. ``correction`` (``holm``, ``bh`` or ``none``) corrects the paired tests of one
    table as one family at level ``alpha``.
    """

    failures: str = "common"
    correction: str = "holm"
    alpha: float = 0.05
    n_boot: int = 1000

    def __post_init__(self) -> None:
        from editlab.bench.stats import CORRECTIONS

        if self.failures not in FAILURE_POLICIES:
            raise ValueError(f"unknown failure policy '{self.failures}', available: {', '.join(FAILURE_POLICIES)}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"unknown correction '{self.correction}', available: {', '.join(CORRECTIONS)}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def note(self) -> str:
        policy = ("methods compared on the samples all of them edited and scored (common set, n)"
                  if self.failures == "common" else
                  "a failed edit or metric scores the metric's worst value, over the samples all methods attempted")
        correction = {"holm": "Holm-corrected", "bh": "Benjamini-Hochberg-corrected", "none": "uncorrected"}
        return (f"{policy}; **bold**: best mean of the column; †: worse than that best, the paired test's winner "
                f"being the best (Wilcoxon signed-rank, {correction[self.correction]} over the table's comparisons, "
                f"p < {self.alpha:g}, and the paired bootstrap 95% CI of the mean difference excluding 0; edits of "
                "one source image form one cluster); ± is the half-width of the bootstrap 95% CI of the mean")


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
    """Everything the renderers need: rows (meta + cells), column groups, and the per-sample values.

    ``long`` holds the values the table compares (after the failure policy: the common set, or failures scored
    worst; ``filled`` marks the latter), ``raw`` every successful edit's values, ``status`` every scored sample's
    edit status, ``coverage`` per dataset the common set's size and how complete each run is.
    """

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
    options: TableOptions = field(default_factory=TableOptions)
    raw: pd.DataFrame = field(default_factory=pd.DataFrame)
    status: pd.DataFrame = field(default_factory=pd.DataFrame)
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)
    worst_observed: list[str] = field(default_factory=list)

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

    def random_weight_runs(self) -> list[str]:
        """Runs made on components with random weights (the toy backbones): their numbers measure nothing."""
        return [r.label for r in self.runs if "random weights" in str((r.backbone or {}).get("source", ""))]

    def warning(self) -> str:
        toy = self.random_weight_runs()
        return (f"WARNING: {', '.join(toy)} ran on a toy backbone with RANDOM weights: these numbers check the code "
                "path and measure nothing") if toy else ""

    def note(self) -> str:
        """The footnote every render of this table carries: policy, marks, coverage."""
        parts = [self.warning()] if self.warning() else []
        parts.append(self.options.note())
        if self.worst_observed:
            parts.append("worst value observed in this comparison used for: " + ", ".join(self.worst_observed))
        for dataset, cov in sorted(self.coverage.items()):
            where = f" on {dataset}" if len(self.coverage) > 1 else ""
            incomplete = [f"{m} ({k} missing)" for m, k in cov["missing"].items() if k]
            parts.append(f"common set{where}: n = {cov['n_common']} of {cov['n_samples']} samples"
                         + (f"; incomplete runs: {', '.join(incomplete)}" if incomplete else ""))
        return "; ".join(parts)


class DefinitionConflict(ValueError):
    """Two runs computed a column of the same name differently; the report refuses to merge them."""


#: The fields of a metric definition that must agree for two runs' values to share a column.
DEFINITION_KEYS = ("class", "definition", "version", "mode", "backbone", "scale", "higher_is_better", "resize",
                   "reference", "kid_subset_size", "protocol", "decoding", "expr")


def _judged_by(d: dict[str, Any]) -> Any:
    """The judge of a judge column (model and label; the server's URL may move without changing a number)."""
    judge = d.get("judge")
    if not isinstance(judge, dict):
        return judge
    return {k: v for k, v in judge.items() if k not in ("base_url", "api_key_env")}


def metric_definitions(runs: list[LoadedRun]) -> dict[str, dict[str, Any]]:
    """Every column's definition over ``runs``; raises :class:`DefinitionConflict` when two runs disagree
    (different model, version, mode, weights, ...), naming the column, the runs and the fields."""
    merged: dict[str, dict[str, Any]] = {}
    owner: dict[str, LoadedRun] = {}
    for run in runs:
        for name, d in run.definitions().items():
            if name not in merged:
                merged[name], owner[name] = d, run
                continue
            first = merged[name]
            diff = [k for k in DEFINITION_KEYS if first.get(k) != d.get(k)]
            if _judged_by(first) != _judged_by(d):
                diff.append("judge")
            if first.get("weights") is not None and d.get("weights") is not None and first["weights"] != d["weights"]:
                diff.append("weights")
            if diff:
                what = "; ".join(f"{k}: {first.get(k)!r} vs {d.get(k)!r}" for k in diff)
                raise DefinitionConflict(
                    f"column '{name}' is computed differently in {owner[name].run_dir} and {run.run_dir} ({what}); "
                    f"values of different definitions are never one column: score both runs with the same metric "
                    f"settings (`editlab run` on a run re-scores it with the current ones) or report them separately")
    return merged


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
    """``mean ± half-width`` of the bootstrap 95% CI (scaled by ``k``), and the scaled mean."""
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


def mark_best(cells: dict[str, Cell], higher: bool) -> list[str]:
    """Mark the best finite mean among ``cells`` (label -> cell) in bold; returns the best labels (none when
    fewer than two cells are finite)."""
    finite = {k: c.value for k, c in cells.items() if np.isfinite(c.value)}
    if len(finite) < 2:
        return []
    best_value = max(finite.values()) if higher else min(finite.values())
    best = [k for k, v in finite.items() if v == best_value]
    for k in best:
        cells[k].best = True
    return best


@dataclass
class _Pending:
    """One comparison of a table's family: ``cell``'s method against a best method, by a paired test."""

    cell: Cell
    best: str
    test: dict[str, Any]


def compare_with_best(cells: dict[str, Cell], values: dict[str, pd.Series], higher: bool, clusters: pd.Series,
                      n_boot: int = 1000) -> list[_Pending]:
    """Bold the best of ``cells`` and test every other method against it on the same samples (``values``:
    label -> per-sample values); the tests join the table's family, marked by :func:`resolve_marks`."""
    from editlab.bench.stats import paired_comparison

    best = mark_best(cells, higher)
    pending = []
    for label, cell in cells.items():
        if label in best or not np.isfinite(cell.value):
            continue
        for b in best:
            test = paired_comparison(values[b], values[label], higher, n_boot=n_boot, clusters=clusters)
            pending.append(_Pending(cell, b, test))
    return pending


def resolve_marks(family: list[_Pending], options: TableOptions) -> None:
    """Correct the family's p-values together and dagger each cell whose test the best won significantly."""
    from editlab.bench.stats import adjust_pvalues, is_significant

    adjusted = adjust_pvalues([p.test["p_wilcoxon"] for p in family], options.correction)
    for p, p_adj in zip(family, adjusted):
        p.test["p_adjusted"] = float(p_adj)
        # differences are best - other: the best won when the mean difference favours "a"
        if is_significant(p.test, p_adj, options.alpha) and (p.test["mean_diff"] > 0) == p.test["higher"]:
            p.cell.worse = True


def _sample_frames(runs: list[LoadedRun], several: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(status of every scored sample, values of every successful edit) over ``runs``; with several datasets,
    sample ids and source keys are qualified by the dataset so that paired tests never pair across datasets."""
    status_rows, value_rows = [], []
    for run in runs:
        for rec in run.records:
            if rec.get("scored") is False:  # e.g. the earlier turns of a final-turn evaluation
                continue
            sid = f"{run.dataset}/{rec['id']}" if several else rec["id"]
            source = rec.get("source_key") or rec["id"]
            source = f"{run.dataset}/{source}" if several else source
            base = {"method": run.label, "dataset": run.dataset, "sample_id": sid, "source_key": source,
                    "task_type": rec.get("task_type")}
            status_rows.append(base | {"status": rec.get("status")})
            if rec.get("status") != "ok":
                continue
            errors = rec.get("metric_errors") or {}
            metrics = dict(rec.get("metrics") or {})
            for name in errors:
                metrics.setdefault(name, None)
            for name, v in metrics.items():
                value_rows.append(base | {"metric": name, "value": np.nan if v is None else float(v),
                                          "metric_error": name in errors})
    status = pd.DataFrame(status_rows, columns=["method", "dataset", "sample_id", "source_key", "task_type",
                                                "status"])
    raw = pd.DataFrame(value_rows, columns=["method", "dataset", "sample_id", "source_key", "task_type", "metric",
                                            "value", "metric_error"])
    raw["value"] = raw["value"].astype(float)
    return status, raw


def comparison_values(status: pd.DataFrame, raw: pd.DataFrame, defines: dict[tuple[str, str], set[str]],
                      higher: dict[str, bool], worst: dict[str, float | None],
                      options: TableOptions) -> tuple[pd.DataFrame, list[str]]:
    """The per-sample values a table compares, after the failure policy (see :class:`TableOptions`).

    For each dataset and metric, the methods are the runs that define the metric. ``common``: samples every one
    of them edited with the metric computed (no metric error); ``worst``: samples every one of them attempted,
    failures (edit errors, metric errors) scored with the metric's worst value. In both, a sample where the
    metric is undefined (NaN, e.g. a background metric without a mask) for some method is left out for all.
    Returns the long values (with ``filled``) and the metrics whose worst value had to be taken as observed."""
    frames, observed = [], []
    columns = ["method", "dataset", "sample_id", "source_key", "task_type", "metric", "value", "filled"]
    for dataset, st in status.groupby("dataset", sort=True):
        wide = st.pivot(index="sample_id", columns="method", values="status")
        info = st.drop_duplicates("sample_id").set_index("sample_id")[["source_key", "task_type"]]
        rv = raw[raw["dataset"] == dataset]
        for metric in sorted(rv["metric"].unique()):
            methods = sorted(m for m in wide.columns if metric in defines.get((dataset, m), set()))
            if not methods:
                continue
            sub = rv[rv["metric"] == metric]
            ws = wide[methods]
            vals = sub.pivot(index="sample_id", columns="method", values="value").reindex(index=ws.index,
                                                                                         columns=methods)
            merr = sub.pivot(index="sample_id", columns="method", values="metric_error").reindex(
                index=ws.index, columns=methods).fillna(False).astype(bool)
            if options.failures == "common":
                keep = (ws == "ok").all(axis=1) & ~merr.any(axis=1)
                filled = pd.DataFrame(False, index=ws.index, columns=methods)
            else:
                keep = ws.isin(["ok", "error"]).all(axis=1)
                filled = (ws == "error") | merr
                value = worst.get(metric)
                if value is None:
                    finite = vals.to_numpy(dtype=float)
                    finite = finite[np.isfinite(finite)]
                    value = (finite.min() if higher.get(metric, True) else finite.max()) if finite.size else np.nan
                    if filled[keep].to_numpy().any():
                        observed.append(metric)
                vals = vals.mask(filled, value)
            vals, filled = vals[keep], filled[keep]
            defined = np.isfinite(vals.to_numpy(dtype=float)).all(axis=1)
            vals, filled = vals[defined], filled[defined]
            if vals.empty:
                continue
            long = vals.stack().rename("value").reset_index()
            long["filled"] = filled.stack().to_numpy()
            long["dataset"], long["metric"] = dataset, metric
            long = long.join(info, on="sample_id")
            frames.append(long[columns])
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    out["value"] = out["value"].astype(float)
    return out, sorted(set(observed))


def _coverage(runs: list[LoadedRun], status: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per dataset: the samples any run holds, the common set (edited by every run) and each run's missing."""
    out: dict[str, dict[str, Any]] = {}
    for dataset, st in status.groupby("dataset", sort=True):
        wide = st.pivot(index="sample_id", columns="method", values="status")
        labels = [r.label for r in runs if r.dataset == dataset]
        common = int(((wide == "ok").all(axis=1) & (wide.notna().sum(axis=1) == len(labels))).sum())
        missing = {r.label: int(r.results.get("missing") or 0) for r in runs if r.dataset == dataset}
        out[dataset] = {"n_samples": int(len(wide)), "n_common": common, "missing": missing}
    return out


def _failures(run: LoadedRun) -> tuple[str, float]:
    """The failure cell of a run (``err/attempted (rate)``, plus metric failures) and its rate."""
    scored = [r for r in run.records if r.get("scored") is not False]
    attempted = [r for r in scored if r.get("status") in ("ok", "error")]
    failed = sum(r.get("status") == "error" for r in attempted)
    metric_failed = sum(bool(r.get("metric_errors")) for r in attempted if r.get("status") == "ok")
    if not attempted:
        return "–", float("nan")
    rate = failed / len(attempted)
    text = f"{failed}/{len(attempted)}" + (f" ({100 * rate:.1f}%)" if failed else "")
    if metric_failed:
        text += f" +{metric_failed} metric"
    missing = int(run.results.get("missing") or 0)
    if missing:
        text += f", {missing} missing"
    return text, rate


def build_model(run_dirs: list[Path] | list[LoadedRun], options: TableOptions | None = None) -> TableModel:
    """Load runs and build the main table: values under the failure policy, best and significance marks."""
    from editlab.bench.stats import summarize

    options = options or TableOptions()
    runs = [r if isinstance(r, LoadedRun) else None for r in run_dirs]
    if any(r is None for r in runs):
        runs = load_runs([Path(d) for d in run_dirs])  # type: ignore[arg-type]
    definitions = metric_definitions(runs)
    higher = {n: d.get("higher_is_better", True) for n, d in definitions.items()}
    scale = {n: d.get("scale", 1.0) for n, d in definitions.items()}
    worst = {n: d.get("worst") for n, d in definitions.items()}
    dataset_level = {n for n, d in definitions.items() if d.get("per_sample") is False}
    def rank(name: str) -> tuple[int, str]:
        return _family_rank(name, definitions.get(name))

    metric_names = sorted(set(higher) - dataset_level, key=rank)
    several = len({run.dataset for run in runs}) > 1
    status, raw = _sample_frames(runs, several)
    defines = {(run.dataset, run.label): set(run.definitions()) for run in runs}
    long, observed = comparison_values(status, raw, defines, higher, worst, options)
    long.attrs["higher"] = higher
    coverage = _coverage(runs, status)
    paired = paired_table(long, options)

    composite = any(run.parts for run in runs)
    meta_columns = (["learning strategy"] + (["dataset"] if several else []) + ["method"]
                    + (["inversion", "editor"] if composite else []) + ["n"])
    columns, families, metric_of = [], {}, {}
    for name in metric_names + sorted(dataset_level, key=rank):
        col = _column(name, higher[name], scale[name])
        columns.append(col)
        families[col] = metric_family(name, definitions.get(name))
        metric_of[col] = name
    for col in COST_COLUMNS:
        columns.append(col)
        families[col] = "cost"

    by_run = {key: sub for key, sub in long.groupby(["dataset", "method", "metric"], sort=False)}
    rows = []
    for run in runs:
        res = run.results
        parts = run.parts
        meta = {"learning strategy": run.strategy, "dataset": run.dataset, "method": run.label,
                "n": coverage.get(run.dataset, {}).get("n_common", 0)}
        if composite:
            meta |= {"inversion": parts[1] if parts else "", "editor": parts[0] if parts else ""}
        cells: dict[str, Cell] = {}
        values: dict[str, pd.Series] = {}
        for name in metric_names:
            col = _column(name, higher[name], scale[name])
            mine = by_run.get((run.dataset, run.label, name))
            if mine is None or mine.empty:
                cells[col] = Cell("–")
                continue
            agg = summarize(mine["value"].to_numpy(), higher[name], n_boot=options.n_boot,
                            clusters=mine["source_key"].to_numpy())
            text, value = _fmt_ci(agg, scale[name])
            cells[col] = Cell(text, value)
            values[name] = mine.set_index("sample_id")["value"]
        n_common = meta["n"]
        for name in sorted(dataset_level, key=rank):
            col = _column(name, higher[name], scale[name])
            d = (res.get("dataset_metrics") or {}).get(name) or {}
            value = d.get("value")
            if value is None or not np.isfinite(value):
                cells[col] = Cell("–")
                continue
            text = f"{value * scale[name]:.4g}"
            if d.get("std") is not None and np.isfinite(d["std"]):
                text += f" ± {d['std'] * scale[name]:.2g}"
            if d.get("n") is not None and int(d["n"]) != n_common:
                text += f" (n={int(d['n'])})"  # computed on the run's own successful edits, not the common set
            cells[col] = Cell(text, value * scale[name])
        agg = res.get("metrics") or {}
        t = agg.get("wall_time_s", {"mean": float("nan"), "std": 0, "n": 0})
        m = agg.get("peak_mem_mb", {"mean": float("nan"), "std": 0, "n": 0})
        cells["s/edit ↓"] = Cell(_fmt(t["mean"], t["std"], t["n"]), t["mean"] if t["n"] else float("nan"))
        cells["peak MB ↓"] = Cell("–" if m["n"] == 0 else f"{m['mean']:.0f}", m["mean"] if m["n"] else float("nan"))
        text, rate = _failures(run)
        cells["failed ↓"] = Cell(text, rate)
        c = res["counts"]
        cells["ok/err/n.a."] = Cell(f"{c['ok']}/{c['error']}/{c['not_applicable']}")
        rows.append({"meta": meta, "cells": cells, "run": run, "values": values})

    # a metric no run defines for any sample only widens the table
    columns = [c for c in columns if families[c] == "cost" or any(r["cells"][c].text != "–" for r in rows)]
    order = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    rows.sort(key=lambda r: (order.get(r["meta"]["learning strategy"], len(order)), r["meta"]["dataset"],
                             r["meta"]["method"]))
    family: list[_Pending] = []
    for col in columns:
        name = metric_of.get(col)
        for dataset in sorted({r["meta"]["dataset"] for r in rows}):  # the best is the best on one dataset
            here = [r for r in rows if r["meta"]["dataset"] == dataset]
            cells = {r["meta"]["method"]: r["cells"][col] for r in here}
            if name in metric_names:
                values = {r["meta"]["method"]: r["values"].get(name, pd.Series(dtype=float)) for r in here}
                clusters = long[long["dataset"] == dataset].drop_duplicates("sample_id").set_index(
                    "sample_id")["source_key"]
                pending = compare_with_best(cells, values, higher[name], clusters, options.n_boot)
                for p in pending:
                    p.test["higher"] = higher[name]
                family += pending
            elif name in dataset_level:
                ns = {((r["run"].results.get("dataset_metrics") or {}).get(name) or {}).get("n") for r in here}
                if len(ns) == 1:  # only like with like: the same number of edits in every run
                    mark_best(cells, higher[name])
            elif col in ("s/edit ↓", "peak MB ↓", "failed ↓"):
                mark_best(cells, False)
    resolve_marks(family, options)
    return TableModel(runs=[r["run"] for r in rows], meta_columns=meta_columns, columns=columns, families=families,
                      rows=rows, long=long, paired=paired, higher=higher, scale=scale, metric_of=metric_of,
                      options=options, raw=raw, status=status, coverage=coverage, worst_observed=observed)


def build_table(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(formatted table, long table of the compared per-sample values) over the given run folders."""
    model = build_model(run_dirs)
    return model.frame("markdown"), model.long


def paired_table(long: pd.DataFrame, options: TableOptions | None = None) -> pd.DataFrame:
    """Every pair of methods on every per-sample metric, per dataset, on the values the table compares: paired
    bootstrap CI of the mean difference (cluster bootstrap by source image) and a Wilcoxon signed-rank
    p-value, corrected over all rows of a dataset (see :mod:`editlab.bench.stats`)."""
    from editlab.bench.stats import pairwise_table

    options = options or TableOptions()
    if long.empty or long["method"].nunique() < 2:
        return pd.DataFrame()
    higher = long.attrs.get("higher", {})
    frames = []
    for dataset, sub in long.groupby("dataset", sort=True):
        if sub["method"].nunique() < 2:
            continue
        clusters = sub.drop_duplicates("sample_id").set_index("sample_id")["source_key"]
        table = pairwise_table(sub[["method", "sample_id", "metric", "value"]],
                               {m: higher.get(m, True) for m in sub["metric"].unique()}, clusters=clusters,
                               correction=options.correction, alpha=options.alpha, n_boot=options.n_boot)
        table.insert(0, "dataset", dataset)
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------------------
# Per-task-type and inversion x editor tables
# --------------------------------------------------------------------------------------------------------
def _pick_metric(long: pd.DataFrame, metric: str | None) -> str | None:
    if long.empty:
        return None
    if metric is not None:
        return metric
    finite = long[np.isfinite(long["value"])]
    available = list(dict.fromkeys(finite["metric"])) or list(dict.fromkeys(long["metric"]))
    for pref in TASK_METRIC_PREFERENCE:
        hit = next((a for a in available if _is_metric(a, pref)), None)
        if hit is not None:
            return hit
    return available[0]


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


def task_cells(long: pd.DataFrame, metric: str, pivot: pd.DataFrame, higher: bool, scale: float = 1.0,
               options: TableOptions | None = None) -> dict[tuple[str, str], Cell]:
    """Cells of the per-task table: scaled mean, best per task type, and paired tests against that best over
    the task type's samples, corrected as one family over the whole per-task table."""
    options = options or TableOptions()
    cells: dict[tuple[str, str], Cell] = {}
    sub = long[(long["metric"] == metric) & long["value"].notna()]
    family: list[_Pending] = []
    for fam, task in pivot.columns:
        col: dict[str, Cell] = {}
        for method in pivot.index:
            v = pivot.loc[method, (fam, task)]
            value = float(v) * scale if pd.notna(v) else float("nan")
            col[method] = Cell("–" if not np.isfinite(value) else f"{value:.{_digits(value)}f}", value)
        in_task = sub[sub["task_type"] == task]
        values = {m: in_task[in_task["method"] == m].set_index("sample_id")["value"] for m in col}
        clusters = in_task.drop_duplicates("sample_id").set_index("sample_id")["source_key"]
        pending = compare_with_best(col, values, higher, clusters, options.n_boot)
        for p in pending:
            p.test["higher"] = higher
        family += pending
        for method, cell in col.items():
            cells[(method, task)] = cell
    resolve_marks(family, options)
    return cells


def grid_table(model: TableModel, metric: str, dataset: str | None = None) -> pd.DataFrame:
    """Inversion (rows) x editor (columns) grid of one metric's mean (scaled) on one dataset (default: the only
    one), on the table's values: best cell in bold, a dagger where the best won the paired test (corrected as
    one family over the grid)."""
    cells: dict[str, Cell] = {}
    values: dict[str, pd.Series] = {}
    where: dict[str, tuple[str, str]] = {}
    long = model.long[model.long["metric"] == metric]
    for row in model.rows:
        parts = row["run"].parts
        label = row["meta"]["method"]
        if dataset is not None and row["meta"]["dataset"] != dataset:
            continue
        if not parts or parts[::-1] in where.values():
            continue
        mine = long[long["method"] == label].set_index("sample_id")["value"].dropna()
        if mine.empty:
            continue
        value = mine.mean() * model.scale.get(metric, 1.0)
        cells[label] = Cell(f"{value:.{_digits(value)}f}", value)
        values[label] = mine
        where[label] = (parts[1], parts[0])
    if len(cells) < 2:
        return pd.DataFrame()
    higher = model.higher.get(metric, True)
    sub = long[long["method"].isin(list(cells))]
    clusters = sub.drop_duplicates("sample_id").set_index("sample_id")["source_key"]
    pending = compare_with_best(cells, values, higher, clusters, model.options.n_boot)
    for p in pending:
        p.test["higher"] = higher
    resolve_marks(pending, model.options)
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
                  scale: float, options: TableOptions) -> tuple[str, str, str, pd.DataFrame]:
    """(markdown, latex, html, csv frame) of the per-task table."""
    from editlab.reports.html import cell_html, esc

    cells = task_cells(long, metric, tasks, higher, scale, options)
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
    """Long numeric summary (unscaled): one row per method and metric. ``mean`` ... ``worst_decile`` are over the
    run's own successful edits; ``*_compared`` over the values the table compares (its failure policy)."""
    from editlab.bench.stats import summarize

    grouped = {key: sub for key, sub in model.long.groupby(["dataset", "method", "metric"], sort=False)}
    rows = []
    for row in model.rows:
        run = row["run"]
        parts = run.parts
        for name, agg in sorted((run.results.get("metrics") or {}).items()):
            compared = grouped.get((run.dataset, run.label, name))
            cmp = summarize(compared["value"].to_numpy(), model.higher.get(name, True), n_boot=model.options.n_boot,
                            clusters=compared["source_key"].to_numpy()) if compared is not None else {}
            rows.append({
                "method": run.label, "learning_strategy": run.strategy, "dataset": run.dataset,
                "inversion": parts[1] if parts else None, "editor": parts[0] if parts else None,
                "metric": name, "family": metric_family(name), "higher_is_better": model.higher.get(name, False),
                "scale": model.scale.get(name, 1.0),
                **{k: agg.get(k) for k in ("mean", "std", "n", "nan", "ci_low", "ci_high", "worst_decile")},
                "failures": model.options.failures,
                **{f"{k}_compared": cmp.get(k) for k in ("mean", "n", "ci_low", "ci_high")},
                "filled_compared": int(compared["filled"].sum()) if compared is not None else 0,
            })
    return pd.DataFrame(rows)


#: Widest terminal table ``editlab run`` prints.
TERMINAL_WIDTH = 120


def terminal_table(model: TableModel, width: int = TERMINAL_WIDTH, limit: int = 6) -> str:
    """The compact table ``editlab run`` prints: method, the headline columns of the metric set (one per family,
    at most ``limit``, as many as fit in ``width`` characters, the least important dropped first), failures
    and seconds per edit. Marks as in the full table (*best*, †); the full table is in the files."""
    if not model.rows:
        return "(no results)"
    column_of = {m: c for c, m in model.metric_of.items()}
    headline = [column_of[m] for m in main_metrics(model.long, limit=limit) if column_of.get(m) in model.columns]
    names = ["method"] + (["dataset"] if "dataset" in model.meta_columns else []) + ["n"]

    def render(cols: list[str]) -> str:
        data = [[str(r["meta"][c]) for c in names] + [r["cells"][c].markdown().replace("**", "*") for c in cols]
                for r in model.rows]
        return pd.DataFrame(data, columns=names + cols).to_markdown(index=False, tablefmt="simple")

    tail = ["failed ↓", "s/edit ↓"]
    cols = headline + tail
    text = render(cols)
    while headline and max(len(line) for line in text.splitlines()) > width:
        headline = headline[:-1]
        text = render(headline + tail)
    return f"{model.warning()}\n{text}" if model.warning() else text


def render_tables(run_dirs: list[Path], out_dir: Path | None = None, task_metric: str | None = None,
                  options: TableOptions | None = None) -> dict[str, str]:
    """Render the comparison tables as Markdown, CSV, LaTeX and HTML; write them to ``out_dir``.

    Returns ``markdown`` (everything: main table, per-task table, inversion x editor grids, paired-test
    summary, paper comparison), ``csv`` and ``latex`` (the main table), ``html`` (a full page) and
    ``terminal`` (the compact table ``editlab run`` prints).
    """
    return render_model(build_model(run_dirs, options), out_dir, task_metric)


def render_model(model: TableModel, out_dir: Path | None = None, task_metric: str | None = None) -> dict[str, str]:
    """:func:`render_tables` for an already built :class:`TableModel`."""
    from editlab.reports.html import page
    from editlab.reports.paper import compare_with_papers

    long = model.long
    table = model.frame("markdown")
    md = table.to_markdown(index=False) if not table.empty else "(no results)"
    html_parts = [f"<h2>Methods by learning strategy</h2>{_model_html(model)}"]
    if model.warning() and len(model.rows) <= 1:
        md += f"\n\n{model.warning()}"
        html_parts.append(f"<p class=note><strong>{_esc(model.warning())}</strong></p>")
    if len(model.rows) > 1:
        groups = "; ".join(f"{fam}: {', '.join(cols)}" for fam, cols in _family_groups(model.columns, model.families))
        md += f"\n\n{model.note()}. Column groups: {groups}"
        html_parts.append(f"<p class=note>{_esc(model.note().replace('**', ''))}</p>")
    out = {"csv": model.frame("plain").to_csv(index=False), "latex": _model_latex(model)}
    files: dict[str, str] = {}

    metric, tasks = task_table(long, task_metric)
    if not tasks.empty and metric is not None:
        arrow = "↑" if model.higher.get(metric, True) else "↓"
        k = model.scale.get(metric, 1.0)
        suffix = f" (×1e{int(round(np.log10(k)))})" if k != 1.0 else ""
        t_md, t_tex, t_html, t_csv = _tasks_render(long, metric, tasks, model.higher.get(metric, True), k,
                                                   model.options)
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
        text = (f"Paired comparisons (cluster bootstrap 95% CI and Wilcoxon on the compared samples, "
                f"{model.options.correction} correction over all pairs x metrics of a dataset, alpha "
                f"{model.options.alpha:g}): {len(sig)} of {len(paired)} method pairs x metrics differ significantly")
        md += f"\n\n{text}; see paired.csv"
        html_parts.append(f"<h2>Paired comparisons</h2><p>{_esc(text)} (paired.csv lists all).</p>")

    comparison = compare_with_papers(model.runs)
    if comparison is not None:
        md += f"\n\n{comparison.markdown}"
        html_parts.append(comparison.html)
        files["paper_comparison.md"] = comparison.markdown + "\n"
        files["paper_comparison.csv"] = comparison.frame.to_csv(index=False)

    out["markdown"] = md
    out["html"] = page("Comparison tables", "".join(html_parts))
    out["terminal"] = terminal_table(model)
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
