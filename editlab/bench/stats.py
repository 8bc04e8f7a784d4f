"""Aggregate statistics over per-sample metric values.

NaN marks a metric that is undefined for a sample and is left out. Summaries give the mean, spread, a
percentile-bootstrap confidence interval and the worst-decile level; paired comparisons of two methods on the
same samples give a bootstrap CI of the mean difference and a Wilcoxon signed-rank p-value.

Several edits of one source image are not independent. Given each sample's cluster (its source image), the
bootstrap resamples whole clusters and the Wilcoxon test runs on the per-cluster mean differences, so ``n``
samples from ``k`` sources count as ``k`` observations, not ``n``. :func:`adjust_pvalues` corrects a family of
p-values for multiple comparisons (Holm, or Benjamini-Hochberg).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

PAIRED_FIELDS = ("n", "n_clusters", "mean_diff", "ci_low", "ci_high", "p_wilcoxon", "significant", "better")
CORRECTIONS = ("holm", "bh", "none")
LONG_COLUMNS = ("method", "sample_id", "metric", "value")


def _check_args(n_boot: int, ci: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _bootstrap_mean_ci(v: np.ndarray, n_boot: int, seed: int, ci: float,
                       groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of a non-empty 1-D array (all resamples drawn at once). With
    ``groups`` (one integer cluster id per value, 0..k-1), whole clusters are resampled: the mean of a resample
    is the sum of its clusters' values over their count."""
    rng = np.random.default_rng(seed)
    if groups is None:
        n = v.size
        means = v[rng.integers(0, n, (n_boot, n))].mean(axis=1)
    else:
        k = int(groups.max()) + 1
        sums, counts = np.bincount(groups, weights=v, minlength=k), np.bincount(groups, minlength=k)
        idx = rng.integers(0, k, (n_boot, k))
        means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def cluster_ids(keys: pd.Series | np.ndarray | list | None) -> np.ndarray | None:
    """Integer cluster ids 0..k-1 for cluster keys, or None when there are none or every cluster is a singleton
    (then clustering changes nothing)."""
    if keys is None:
        return None
    codes, uniques = pd.factorize(pd.Series(list(keys)).astype(str))
    return None if len(uniques) == len(codes) else codes.astype(np.int64)


def summarize(values: np.ndarray, higher_is_better: bool, n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95, clusters: Any = None) -> dict[str, Any]:
    """Mean, std (ddof=1), counts, bootstrap CI of the mean and worst-decile level of one method's values.

    The worst decile is the 10th percentile when higher is better and the 90th when lower is better.
    ``clusters`` (one key per value, e.g. the source image) makes the bootstrap resample whole clusters.
    """
    _check_args(n_boot, ci)
    arr = np.asarray(values, dtype=float).ravel()
    finite = ~np.isnan(arr)
    v = arr[finite]
    n, n_nan = int(v.size), int(arr.size - v.size)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "std": nan, "n": 0, "nan": n_nan, "ci_low": nan, "ci_high": nan, "worst_decile": nan}
    groups = cluster_ids(np.asarray(list(clusters), dtype=object)[finite]) if clusters is not None else None
    lo, hi = _bootstrap_mean_ci(v, n_boot, seed, ci, groups)
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
                      ci: float = 0.95, clusters: pd.Series | None = None) -> dict[str, Any]:
    """Compare two methods on the samples (index ids) where both are defined; differences are ``a - b``.

    ``clusters`` maps sample ids to cluster keys (the source image): when some cluster holds several samples,
    the bootstrap resamples clusters and the Wilcoxon test runs on the per-cluster mean differences
    (``n_clusters`` observations). ``significant`` needs the bootstrap CI to exclude 0 and the Wilcoxon p-value
    to be below ``1 - ci`` (uncorrected: tables correct a family of tests with :func:`adjust_pvalues`);
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
    out: dict[str, Any] = {"n": n, "n_clusters": n, "mean_diff": nan, "ci_low": nan, "ci_high": nan,
                           "p_wilcoxon": nan, "significant": False, "better": None}
    if n == 0:
        return out
    groups = None
    if clusters is not None:
        keys = clusters.reindex(joined.index)
        keys = keys.where(keys.notna(), pd.Series(joined.index, index=joined.index))  # unknown: its own cluster
        groups = cluster_ids(keys.to_numpy())
    out["mean_diff"] = float(d.mean())
    out["ci_low"], out["ci_high"] = _bootstrap_mean_ci(d, n_boot, seed, ci, groups)
    tested = d
    if groups is not None:
        tested = np.bincount(groups, weights=d) / np.bincount(groups)
        out["n_clusters"] = int(tested.size)
    if tested.size >= 2:
        out["p_wilcoxon"] = 1.0 if np.all(tested == 0) else float(sps.wilcoxon(tested, alternative="two-sided").pvalue)
    out["significant"] = is_significant(out, out["p_wilcoxon"], 1.0 - ci)
    out["better"] = winner(out, higher_is_better) if out["significant"] else None
    return out


def is_significant(test: dict[str, Any], p: float, alpha: float) -> bool:
    """A paired test's verdict at level ``alpha`` with p-value ``p`` (raw or corrected): p below alpha and the
    bootstrap CI of the mean difference excluding 0 (so the direction is the mean's)."""
    excludes_zero = test["ci_low"] > 0 or test["ci_high"] < 0
    return bool(excludes_zero and p is not None and not np.isnan(p) and p < alpha and test["mean_diff"] != 0)


def winner(test: dict[str, Any], higher_is_better: bool) -> str:
    """``a`` or ``b``: which side of ``a - b`` the mean difference favours."""
    return "a" if (test["mean_diff"] > 0) == higher_is_better else "b"


def adjust_pvalues(pvalues: Any, method: str = "holm") -> np.ndarray:
    """p-values corrected for the family they form: ``holm`` (Holm-Bonferroni step-down, controls the
    family-wise error rate), ``bh`` (Benjamini-Hochberg, controls the false discovery rate; scipy's
    ``false_discovery_control``) or ``none``. NaN entries stay NaN and are not counted in the family."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction '{method}', available: {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    v = p[ok]
    if method == "none":
        adj = v
    elif method == "bh":
        adj = sps.false_discovery_control(v, method="bh")
    else:
        order = np.argsort(v, kind="mergesort")
        stepped = np.minimum(1.0, (m - np.arange(m)) * v[order])
        adj = np.empty(m)
        adj[order] = np.maximum.accumulate(stepped)
    out[ok] = adj
    return out


def pairwise_table(values: pd.DataFrame, higher: dict[str, bool], clusters: pd.Series | None = None,
                   correction: str = "holm", alpha: float = 0.05, **kw: Any) -> pd.DataFrame:
    """Paired comparison of every unordered pair of methods for every metric, from long-format values.

    ``values`` has columns ``method, sample_id, metric, value``; ``higher`` maps each metric to whether higher is
    better; ``clusters`` maps sample ids to their source image (see :func:`paired_comparison`); ``kw`` goes to
    :func:`paired_comparison`. The p-values of all rows form one family: ``p_adjusted`` is corrected with
    ``correction`` and ``significant`` / ``better`` are decided on it at level ``alpha``. Rows are sorted by
    metric, then method pair (method_a < method_b); every method in ``values`` is paired for every metric.
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
            res = paired_comparison(a, b, higher[metric], clusters=clusters, **kw)
            rows.append({"metric": metric, "method_a": ma, "method_b": mb, **res})
    adjusted = adjust_pvalues([r["p_wilcoxon"] for r in rows], correction)
    for r, p_adj in zip(rows, adjusted):
        r["p_adjusted"] = float(p_adj)
        r["correction"] = correction
        r["significant"] = is_significant(r, p_adj, alpha)
        r["better"] = winner(r, higher[r["metric"]]) if r["significant"] else None
    columns = ["metric", "method_a", "method_b", *PAIRED_FIELDS, "p_adjusted", "correction"]
    table = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in columns})
    # "better" stays object so that "no winner" is None rather than NaN
    return table.astype({"n": "int64", "n_clusters": "int64", "mean_diff": float, "ci_low": float, "ci_high": float,
                         "p_wilcoxon": float, "p_adjusted": float, "significant": bool, "metric": str,
                         "method_a": str, "method_b": str, "correction": str})
