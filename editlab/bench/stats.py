"""Aggregate statistics over per-sample metric values.

NaN marks a metric that is undefined for a sample and is left out. Summaries give the mean, spread, a
percentile-bootstrap confidence interval and the worst-decile level; paired comparisons of two methods on the
same samples give a bootstrap CI of the mean difference and a Wilcoxon signed-rank p-value.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

PAIRED_FIELDS = ("n", "mean_diff", "ci_low", "ci_high", "p_wilcoxon", "significant", "better")
LONG_COLUMNS = ("method", "sample_id", "metric", "value")


def _check_args(n_boot: int, ci: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _bootstrap_mean_ci(v: np.ndarray, n_boot: int, seed: int, ci: float) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of a non-empty 1-D array (all resamples drawn at once)."""
    n = v.size
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))
    means = v[idx].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def summarize(values: np.ndarray, higher_is_better: bool, n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95) -> dict[str, Any]:
    """Mean, std (ddof=1), counts, bootstrap CI of the mean and worst-decile level of one method's values.

    The worst decile is the 10th percentile when higher is better and the 90th when lower is better.
    """
    _check_args(n_boot, ci)
    arr = np.asarray(values, dtype=float).ravel()
    finite = ~np.isnan(arr)
    v = arr[finite]
    n, n_nan = int(v.size), int(arr.size - v.size)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "std": nan, "n": 0, "nan": n_nan, "ci_low": nan, "ci_high": nan, "worst_decile": nan}
    lo, hi = _bootstrap_mean_ci(v, n_boot, seed, ci)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if n > 1 else 0.0,
        "n": n,
        "nan": n_nan,
        "ci_low": lo,
        "ci_high": hi,
        "worst_decile": float(np.percentile(v, 10 if higher_is_better else 90)),
    }


def paired_comparison(a: pd.Series, b: pd.Series, higher_is_better: bool, n_boot: int = 1000, seed: int = 0,
                      ci: float = 0.95) -> dict[str, Any]:
    """Compare two methods on the samples (index ids) where both are defined; differences are ``a - b``.

    ``significant`` needs the bootstrap CI to exclude 0 and the Wilcoxon p-value to be below ``1 - ci``;
    ``better`` names the winning method only then.
    """
    _check_args(n_boot, ci)
    for name, s in (("a", a), ("b", b)):
        if not s.index.is_unique:
            raise ValueError(f"{name} has duplicate sample ids")
    joined = pd.concat({"a": a.astype(float), "b": b.astype(float)}, axis=1, join="inner").dropna()
    joined = joined.sort_index()
    d = (joined["a"] - joined["b"]).to_numpy(dtype=float)
    n = int(d.size)
    nan = float("nan")
    out: dict[str, Any] = {"n": n, "mean_diff": nan, "ci_low": nan, "ci_high": nan, "p_wilcoxon": nan,
                           "significant": False, "better": None}
    if n == 0:
        return out
    out["mean_diff"] = float(d.mean())
    out["ci_low"], out["ci_high"] = _bootstrap_mean_ci(d, n_boot, seed, ci)
    if n >= 2:
        out["p_wilcoxon"] = 1.0 if np.all(d == 0) else float(sps.wilcoxon(d, alternative="two-sided").pvalue)
    excludes_zero = out["ci_low"] > 0 or out["ci_high"] < 0
    p = out["p_wilcoxon"]
    significant = bool(excludes_zero and not np.isnan(p) and p < 1.0 - ci and out["mean_diff"] != 0)
    out["significant"] = significant
    if significant:
        a_wins = (out["mean_diff"] > 0) == higher_is_better
        out["better"] = "a" if a_wins else "b"
    return out


def pairwise_table(values: pd.DataFrame, higher: dict[str, bool], **kw: Any) -> pd.DataFrame:
    """Paired comparison of every unordered pair of methods for every metric, from long-format values.

    ``values`` has columns ``method, sample_id, metric, value``; ``higher`` maps each metric to whether higher is
    better; ``kw`` goes to :func:`paired_comparison`. Rows are sorted by metric, then method pair (method_a <
    method_b); every method in ``values`` is paired for every metric.
    """
    missing = [c for c in LONG_COLUMNS if c not in values.columns]
    if missing:
        raise ValueError(f"values lacks columns {missing}")
    if values.duplicated(["method", "sample_id", "metric"]).any():
        raise ValueError("values has duplicate (method, sample_id, metric) rows")
    metrics = sorted(values["metric"].unique())
    unknown = [m for m in metrics if m not in higher]
    if unknown:
        raise KeyError(f"no direction given in `higher` for metrics {unknown}")
    methods = sorted(values["method"].unique())
    rows = []
    for metric in metrics:
        sub = values[values["metric"] == metric]
        wide = sub.pivot(index="sample_id", columns="method", values="value").astype(float)
        for ma, mb in combinations(methods, 2):
            a = wide[ma] if ma in wide.columns else pd.Series(dtype=float)
            b = wide[mb] if mb in wide.columns else pd.Series(dtype=float)
            res = paired_comparison(a, b, higher[metric], **kw)
            rows.append({"metric": metric, "method_a": ma, "method_b": mb, **res})
    columns = ["metric", "method_a", "method_b", *PAIRED_FIELDS]
    table = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in columns})
    # "better" stays object so that "no winner" is None rather than NaN
    return table.astype({"n": "int64", "mean_diff": float, "ci_low": float, "ci_high": float, "p_wilcoxon": float,
                         "significant": bool, "metric": str, "method_a": str, "method_b": str})
