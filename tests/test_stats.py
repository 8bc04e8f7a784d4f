"""Aggregate statistics: summaries, paired comparisons and the pairwise table."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from editlab.bench.stats import paired_comparison, pairwise_table, summarize


def test_summarize_matches_numpy_with_nans() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(3.0, 2.0, 50)
    v[[3, 7, 20]] = np.nan
    s = summarize(v, higher_is_better=True)
    clean = v[~np.isnan(v)]
    assert s["n"] == 47 and s["nan"] == 3
    assert s["mean"] == pytest.approx(clean.mean())
    assert s["std"] == pytest.approx(clean.std(ddof=1))
    assert type(s["n"]) is int and type(s["nan"]) is int
    assert all(type(s[k]) is float for k in ("mean", "std", "ci_low", "ci_high", "worst_decile"))
    json.dumps(s)


def test_summarize_ci_contains_mean_and_narrows() -> None:
    rng = np.random.default_rng(2)
    small = summarize(rng.normal(0.0, 1.0, 20), higher_is_better=True)
    large = summarize(rng.normal(0.0, 1.0, 2000), higher_is_better=True)
    for s in (small, large):
        assert s["ci_low"] < s["mean"] < s["ci_high"]
    assert large["ci_high"] - large["ci_low"] < 0.5 * (small["ci_high"] - small["ci_low"])
    wide = summarize(rng.normal(0.0, 1.0, 200), higher_is_better=True, ci=0.99)
    narrow = summarize(rng.normal(0.0, 1.0, 200), higher_is_better=True, ci=0.5)
    assert narrow["ci_high"] - narrow["ci_low"] < wide["ci_high"] - wide["ci_low"]


def test_summarize_worst_decile_tail() -> None:
    v = np.arange(100, dtype=float)
    assert summarize(v, higher_is_better=True)["worst_decile"] == pytest.approx(np.percentile(v, 10))
    assert summarize(v, higher_is_better=False)["worst_decile"] == pytest.approx(np.percentile(v, 90))
    assert summarize(v, higher_is_better=False)["worst_decile"] > 80


@pytest.mark.parametrize("values", [np.array([]), np.array([np.nan, np.nan])])
def test_summarize_empty(values: np.ndarray) -> None:
    s = summarize(values, higher_is_better=True)
    assert s["n"] == 0 and s["nan"] == values.size
    for k in ("mean", "std", "ci_low", "ci_high", "worst_decile"):
        assert math.isnan(s[k])


def test_summarize_single_value() -> None:
    s = summarize(np.array([np.nan, 0.7]), higher_is_better=False)
    assert s["n"] == 1 and s["nan"] == 1
    assert s["mean"] == pytest.approx(0.7) and s["std"] == 0.0
    assert s["ci_low"] == pytest.approx(0.7) and s["ci_high"] == pytest.approx(0.7)
    assert s["worst_decile"] == pytest.approx(0.7)


def test_summarize_seeded() -> None:
    v = np.random.default_rng(3).normal(size=30)
    s1, s2 = summarize(v, True, seed=5), summarize(v, True, seed=5)
    assert (s1["ci_low"], s1["ci_high"]) == (s2["ci_low"], s2["ci_high"])
    s3 = summarize(v, True, seed=6)
    assert (s1["ci_low"], s1["ci_high"]) != (s3["ci_low"], s3["ci_high"])


def test_paired_wilcoxon_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    a = pd.Series(rng.normal(size=40))
    b = pd.Series(rng.normal(0.2, 1.0, 40))
    r = paired_comparison(a, b, higher_is_better=True)
    assert r["n"] == 40
    assert r["mean_diff"] == pytest.approx((a - b).mean())
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon((a - b).to_numpy()).pvalue)
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"]
    json.dumps(r)


@pytest.mark.parametrize(("higher", "winner"), [(True, "b"), (False, "a")])
def test_paired_shifted_is_significant(higher: bool, winner: str) -> None:
    rng = np.random.default_rng(5)
    a = pd.Series(rng.normal(size=30), index=[f"s{i}" for i in range(30)])
    b = a + 1.0 + 0.05 * rng.normal(size=30)
    r = paired_comparison(a, b, higher_is_better=higher)
    assert r["mean_diff"] == pytest.approx(-1.0, abs=0.05)
    assert r["ci_high"] < 0
    assert r["p_wilcoxon"] < 0.05
    assert r["significant"] is True
    assert r["better"] == winner
    swapped = paired_comparison(b, a, higher_is_better=higher)
    assert swapped["better"] == {"a": "b", "b": "a"}[winner]


def test_paired_identical_not_significant() -> None:
    a = pd.Series(np.random.default_rng(6).normal(size=25))
    r = paired_comparison(a, a.copy(), higher_is_better=True)
    assert r["mean_diff"] == 0.0
    assert r["p_wilcoxon"] == 1.0
    assert r["significant"] is False and r["better"] is None


def test_paired_small_noise_not_significant() -> None:
    rng = np.random.default_rng(7)
    a = pd.Series(rng.normal(size=30))
    b = a + 0.01 * rng.normal(size=30)
    r = paired_comparison(a, b, higher_is_better=True)
    assert r["significant"] is False and r["better"] is None


def test_paired_intersects_ids() -> None:
    a = pd.Series([1.0, 2.0, 3.0, np.nan, 5.0, 6.0], index=["x0", "x1", "x2", "x3", "x4", "x5"])
    b = pd.Series([10.0, 0.0, 0.0, 0.0, 0.0, 99.0], index=["x9", "x5", "x4", "x3", "x2", "y1"])
    r = paired_comparison(a, b, higher_is_better=True)
    # shared non-NaN ids: x2, x4, x5 -> differences 3, 5, 6
    assert r["n"] == 3
    assert r["mean_diff"] == pytest.approx(14.0 / 3.0)
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon([3.0, 5.0, 6.0]).pvalue)


def test_paired_too_few_samples() -> None:
    one = paired_comparison(pd.Series([1.0], index=["s"]), pd.Series([0.0], index=["s"]), True)
    assert one["n"] == 1 and one["mean_diff"] == 1.0 and math.isnan(one["p_wilcoxon"])
    assert one["significant"] is False and one["better"] is None
    none = paired_comparison(pd.Series([1.0], index=["s"]), pd.Series([0.0], index=["t"]), True)
    assert none["n"] == 0 and math.isnan(none["mean_diff"]) and math.isnan(none["ci_low"])


def test_pairwise_table_shape_and_pairs() -> None:
    rng = np.random.default_rng(8)
    rows = []
    offsets = {"m_c": 0.0, "m_a": 1.0, "m_b": 0.0}
    for method, off in offsets.items():
        for metric in ("psnr", "lpips"):
            for i in range(20):
                rows.append({"method": method, "sample_id": f"s{i}", "metric": metric,
                             "value": i + off + 0.01 * rng.normal()})
    df = pd.DataFrame(rows)
    t = pairwise_table(df, {"psnr": True, "lpips": False}, n_boot=200)
    assert t.shape == (6, 13)
    assert (t["n_clusters"] == 20).all() and (t["correction"] == "holm").all()
    assert (t["p_adjusted"] >= t["p_wilcoxon"]).all()
    assert list(t.columns[:3]) == ["metric", "method_a", "method_b"]
    assert list(zip(t["metric"], t["method_a"], t["method_b"])) == [
        ("lpips", "m_a", "m_b"), ("lpips", "m_a", "m_c"), ("lpips", "m_b", "m_c"),
        ("psnr", "m_a", "m_b"), ("psnr", "m_a", "m_c"), ("psnr", "m_b", "m_c"),
    ]
    assert (t["n"] == 20).all()
    ab = t.set_index(["metric", "method_a", "method_b"])
    assert ab.loc[("psnr", "m_a", "m_b"), "better"] == "a"
    assert ab.loc[("lpips", "m_a", "m_b"), "better"] == "b"
    assert ab.loc[("psnr", "m_b", "m_c"), "better"] is None
    again = pairwise_table(df.sample(frac=1.0, random_state=0), {"psnr": True, "lpips": False}, n_boot=200)
    pd.testing.assert_frame_equal(t, again)
    with pytest.raises(KeyError):
        pairwise_table(df, {"psnr": True}, n_boot=200)
