"""Honest comparisons: failures count, significance has a direction and is corrected, columns say what computed
them, and published numbers are set beside ours only like with like.

The run folders are written here in the runner's layout with exact per-sample values, so every expectation is
computed by hand (or by scipy) from those values, independently of editlab's table code.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from editlab.bench.stats import adjust_pvalues, paired_comparison, summarize
from editlab.bench.tables import (
    DefinitionConflict,
    TableOptions,
    build_model,
    find_runs,
    render_tables,
    terminal_table,
)
from editlab.reports.paper import compare_with_papers

CLIP = "clip_score[sw-clip]"
COL = f"{CLIP} ↑"
DEFS = {
    CLIP: {"name": CLIP, "higher_is_better": True, "scale": 1.0, "mode": "clean", "worst": 0.0, "version": "1",
           "definition": "test", "backbone": "weights/shapesworld/clip"},
    "lpips_alex": {"name": "lpips_alex", "higher_is_better": False, "scale": 1.0, "mode": "clean", "worst": None,
                   "version": "1", "definition": "test", "backbone": "alex-imagenet"},
    "edit_acc": {"name": "edit_acc", "higher_is_better": True, "scale": 1.0, "mode": "clean", "worst": 0.0,
                 "version": "1", "definition": "test"},
}


def write_exact_run(ds: Path, method: str, values: dict[str, list[float | None]], fail: set[int] = frozenset(),
                    metric_errors: dict[int, list[str]] | None = None, sources: list[str] | None = None,
                    definitions: dict[str, dict[str, Any]] | None = None, missing: int = 0,
                    results_extra: dict[str, Any] | None = None, n: int | None = None) -> Path:
    """A run folder whose sample ``i`` has ``values[metric][i]`` (None: undefined), failed when ``i`` is in
    ``fail``, with the metric errors given; ``sources`` are the samples' source keys (clusters)."""
    n = n if n is not None else len(next(iter(values.values())))
    run_dir = ds / f"{method}-{zlib.crc32(method.encode()):010d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    metric_errors = metric_errors or {}
    records = []
    for i in range(n):
        rec: dict[str, Any] = {"id": f"s{i:03d}", "method": method, "task_type": "color_change",
                               "source_key": sources[i] if sources else f"s{i:03d}"}
        if i in fail:
            records.append(rec | {"status": "error", "error": "method raised RuntimeError: boom"})
            continue
        rec |= {"status": "ok", "error": None, "image": f"images/s{i:03d}.png", "wall_time_s": 1.0,
                "peak_mem_mb": 100.0, "metrics": {m: v[i] for m, v in values.items()}}
        for m in metric_errors.get(i, []):
            rec["metrics"][m] = None
            rec.setdefault("metric_errors", {})[m] = "RuntimeError: metric crashed on this batch"
        records.append(rec)
    ok = [r for r in records if r["status"] == "ok"]
    definitions = definitions or {m: DEFS[m] for m in values}
    results = {
        "experiment": "exp", "dataset": ds.name, "method": method, "run_key": "k", "seed": 0,
        "taxonomy": {"learning_strategy": "training- and fine-tuning-free", "conditions": ["prompt pair"]},
        "method_settings": {"name": method}, "backbone": {"name": "toy", "resolution": 64},
        "metric_definitions": definitions, "dataset_metrics": {},
        "counts": {"ok": len(ok), "error": n - len(ok), "not_applicable": 0, "total": n, "expected": n + missing},
        "complete": missing == 0, "missing": missing,
        "metrics": {m: summarize(np.array([np.nan if r["metrics"][m] is None else r["metrics"][m] for r in ok]),
                                 definitions[m]["higher_is_better"]) for m in values}
        | {"wall_time_s": summarize(np.ones(len(ok)), False), "peak_mem_mb": summarize(np.full(len(ok), 100.0), False)},
        **(results_extra or {}),
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def _cell(model: Any, method: str, col: str = COL) -> Any:
    return next(r["cells"][col] for r in model.rows if r["meta"]["method"] == method)


def _reproduced_case(ds: Path, failing: str, steady: str) -> tuple[np.ndarray, np.ndarray]:
    """``failing`` fails on the hardest 30% of 200 samples and scores 25.62 on the rest; ``steady`` never fails
    and beats it by +0.29 on every shared sample (with noise), scoring low on the hard ones."""
    rng = np.random.default_rng(0)
    n, hard = 200, set(range(140, 200))
    steady_v = np.where(np.arange(n) < 140, 25.91 + 0.3 * rng.standard_normal(n), 22.0 + 0.3 * rng.standard_normal(n))
    failing_v = steady_v - 0.29 + 0.2 * rng.standard_normal(n)
    failing_v[:140] += 25.62 - failing_v[:140].mean()
    write_exact_run(ds, failing, {CLIP: failing_v.tolist()}, fail=hard)
    write_exact_run(ds, steady, {CLIP: steady_v.tolist()})
    return failing_v, steady_v


@pytest.mark.parametrize(("failing", "steady"), [("A", "B"), ("B", "A")])  # the case and its mirror
def test_the_better_method_is_never_marked_worse(tmp_path: Path, failing: str, steady: str) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    failing_v, steady_v = _reproduced_case(ds, failing, steady)
    # what the old table did: each method's own surviving samples -> the failing method looked best
    assert failing_v[:140].mean() == pytest.approx(25.62) and steady_v.mean() < 25.62
    model = build_model(find_runs([ds]))
    best, worse = _cell(model, steady), _cell(model, failing)
    assert best.best and not best.worse  # the steady method wins on the 140 samples both edited
    assert worse.worse and not worse.best
    assert best.value == pytest.approx(steady_v[:140].mean()) and worse.value == pytest.approx(25.62)
    assert {r["meta"]["n"] for r in model.rows} == {140}
    failed = {r["meta"]["method"]: r["cells"]["failed ↓"].text for r in model.rows}
    assert failed == {failing: "60/200 (30.0%)", steady: "0/200"}
    # and under failures=worst a failed edit scores CLIP 0: the steady method is best over all 200
    worst = build_model(find_runs([ds]), TableOptions(failures="worst"))
    assert _cell(worst, steady).best and _cell(worst, failing).worse
    assert _cell(worst, failing).value == pytest.approx(failing_v[:140].sum() / 200)
    assert {r["meta"]["n"] for r in worst.rows} == {140}  # n: the samples all edited; the worst policy uses 200
    paired = worst.paired.iloc[0]
    assert paired["n"] == 200


def test_common_set_and_worst_values_by_hand(tmp_path: Path) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    write_exact_run(ds, "A", {"edit_acc": [1.0, 1.0, 0.0, 1.0], "lpips_alex": [0.1, 0.2, 0.3, 0.4]}, fail={3})
    write_exact_run(ds, "B", {"edit_acc": [0.0, 1.0, 1.0, 1.0], "lpips_alex": [0.5, 0.4, 0.6, 0.9]})
    common = build_model(find_runs([ds]))
    assert _cell(common, "A", "edit_acc ↑").value == pytest.approx(2 / 3)  # samples 0-2
    assert _cell(common, "B", "edit_acc ↑").value == pytest.approx(2 / 3)
    assert _cell(common, "A", "lpips_alex ↓").value == pytest.approx(0.2)
    worst = build_model(find_runs([ds]), TableOptions(failures="worst"))
    assert _cell(worst, "A", "edit_acc ↑").value == pytest.approx(2 / 4)  # the failure scores edit_acc 0
    # LPIPS has no worst value: the worst observed in the comparison (0.9, lower is better) is used, and said
    assert _cell(worst, "A", "lpips_alex ↓").value == pytest.approx((0.1 + 0.2 + 0.3 + 0.9) / 4)
    assert worst.worst_observed == ["lpips_alex"] and "worst value observed" in worst.note()
    assert worst.long["filled"].sum() == 2  # one failed edit, two metrics


def test_a_metric_that_failed_is_a_failure_not_a_missing_value(tmp_path: Path) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    write_exact_run(ds, "A", {"edit_acc": [0.0, 1.0, 1.0]}, metric_errors={0: ["edit_acc"]})
    write_exact_run(ds, "B", {"edit_acc": [1.0, 0.0, 1.0]})
    model = build_model(find_runs([ds]))
    assert _cell(model, "A", "edit_acc ↑").value == pytest.approx(1.0)  # sample 0 left out for both
    assert _cell(model, "B", "edit_acc ↑").value == pytest.approx(0.5)
    assert _cell(model, "A", "failed ↓").text == "0/3 +1 metric"
    worst = build_model(find_runs([ds]), TableOptions(failures="worst"))
    assert _cell(worst, "A", "edit_acc ↑").value == pytest.approx(2 / 3)


def test_incomplete_runs_are_shown_not_averaged_over(tmp_path: Path) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    write_exact_run(ds, "A", {"edit_acc": [1.0, 1.0, 0.0]}, missing=5)
    write_exact_run(ds, "B", {"edit_acc": [1.0, 0.0, 0.0]})
    model = build_model(find_runs([ds]))
    assert _cell(model, "A", "failed ↓").text == "0/3, 5 missing"
    assert "incomplete runs: A (5 missing)" in model.note()


def test_holm_and_benjamini_hochberg_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02, np.nan])
    # BH: p * m / rank = 0.02, 0.02, 0.04, 0.04 -> running min from the top
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02, np.nan])
    np.testing.assert_allclose(adjust_pvalues(p, "none"), p)
    with pytest.raises(ValueError, match="unknown correction 'bonferroni', available: holm, bh, none"):
        adjust_pvalues(p, "bonferroni")


def test_correction_over_the_tables_family_removes_marks_the_raw_tests_would_give(tmp_path: Path) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    rng = np.random.default_rng(3)
    n = 40
    best = 25 + rng.standard_normal(n)
    write_exact_run(ds, "best", {CLIP: best.tolist()})
    others = {}
    for k in range(6):  # six methods each worse than the best by 0.3 on average
        noise = 0.8 * rng.standard_normal(n)
        others[f"m{k}"] = best - 0.3 + noise - noise.mean()
        write_exact_run(ds, f"m{k}", {CLIP: others[f"m{k}"].tolist()})
    raw = {m: sps.wilcoxon(best - v).pvalue for m, v in others.items()}
    holm = dict(zip(raw, adjust_pvalues(list(raw.values()), "holm")))
    assert any(p < 0.05 for p in raw.values()) and any(raw[m] < 0.05 <= holm[m] for m in raw)
    for correction, ps in (("none", raw), ("holm", holm)):
        model = build_model(find_runs([ds]), TableOptions(correction=correction))
        assert _cell(model, "best").best
        marked = {m for m in others if _cell(model, m).worse}
        expected = {m for m in others if ps[m] < 0.05 and paired_comparison(
            pd.Series(best), pd.Series(others[m]), True)["ci_low"] > 0}
        assert marked == expected, correction
    assert len({m for m in others if _cell(build_model(find_runs([ds])), m).worse}) < len(
        {m for m in others if _cell(build_model(find_runs([ds]), TableOptions(correction="none")), m).worse})


def test_edits_of_one_source_form_one_cluster() -> None:
    rng = np.random.default_rng(4)
    per_source = rng.normal(0.3, 1.0, 10)  # the difference is a property of the source image
    d = np.repeat(per_source, 5) + 0.01 * rng.standard_normal(50)
    ids = [f"s{i}" for i in range(50)]
    clusters = pd.Series([f"src{i // 5}" for i in range(50)], index=ids)
    a, b = pd.Series(d, index=ids), pd.Series(np.zeros(50), index=ids)
    clustered = paired_comparison(a, b, True, clusters=clusters)
    naive = paired_comparison(a, b, True)
    assert clustered["n"] == 50 and clustered["n_clusters"] == 10 and naive["n_clusters"] == 50
    cluster_means = pd.Series(d).groupby(np.arange(50) // 5).mean().to_numpy()
    assert clustered["p_wilcoxon"] == pytest.approx(sps.wilcoxon(cluster_means).pvalue)
    assert clustered["p_wilcoxon"] > naive["p_wilcoxon"]  # 50 correlated edits are not 50 observations
    assert clustered["ci_high"] - clustered["ci_low"] > naive["ci_high"] - naive["ci_low"]
    wide = summarize(d, True, clusters=clusters.to_numpy())
    narrow = summarize(d, True)
    assert wide["ci_high"] - wide["ci_low"] > narrow["ci_high"] - narrow["ci_low"]


def test_tables_use_the_source_clusters_recorded_by_the_runner(tmp_path: Path) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    rng = np.random.default_rng(5)
    per_source = rng.normal(0.5, 1.0, 8)
    base = 25 + rng.standard_normal(32)
    sources = [f"src{i // 4}" for i in range(32)]
    write_exact_run(ds, "A", {CLIP: (base + np.repeat(per_source, 4)).tolist()}, sources=sources)
    write_exact_run(ds, "B", {CLIP: base.tolist()}, sources=sources)
    model = build_model(find_runs([ds]))
    row = model.paired.iloc[0]
    assert row["n"] == 32 and row["n_clusters"] == 8
    assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(per_source).pvalue, rel=1e-6)


def test_columns_with_different_definitions_are_never_merged(tmp_path: Path, capsys: Any) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    write_exact_run(ds, "A", {CLIP: [1.0, 2.0]})
    other = {CLIP: DEFS[CLIP] | {"version": "2"}}
    write_exact_run(ds, "B", {CLIP: [1.0, 2.0]}, definitions=other)
    with pytest.raises(DefinitionConflict, match=r"column 'clip_score\[sw-clip\]' is computed differently .*version"):
        build_model(find_runs([ds]))
    from editlab.bench.cli import main

    with pytest.raises(SystemExit, match="editlab report: column 'clip_score"):
        main(["report", str(ds), "--tables-only"])
    weights = {CLIP: DEFS[CLIP] | {"weights": {"weights/shapesworld/clip/model.safetensors": "aa"}}}
    write_exact_run(ds, "B", {CLIP: [1.0, 2.0]}, definitions=weights)
    write_exact_run(ds, "A", {CLIP: [1.0, 2.0]},
                    definitions={CLIP: DEFS[CLIP] | {"weights": {"weights/shapesworld/clip/model.safetensors": "bb"}}})
    with pytest.raises(DefinitionConflict, match="weights"):
        build_model(find_runs([ds]))


def test_terminal_table_fits_120_columns(tmp_path: Path) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    names = ["clip_score[sw-clip]", "clip_edited[sw-clip]", "clip_dir[sw-clip]", "structure_dist[sw-clip]",
             "bg_psnr", "bg_ssim", "bg_mse", "lpips_alex", "edit_acc", "preservation", "gt_psnr"]
    defs = {n: {"name": n, "higher_is_better": n not in ("bg_mse", "lpips_alex", "structure_dist[sw-clip]"),
                "scale": 1.0, "mode": "clean", "definition": "t", "version": "1"} for n in names}
    rng = np.random.default_rng(6)
    for method in ("p2p+direct (cross_replace_steps=0.4)", "masactrl+ddim (start_step=4)", "sdedit"):
        write_exact_run(ds, method, {n: (10 + rng.standard_normal(12)).tolist() for n in names}, definitions=defs)
    model = build_model(find_runs([ds]))
    text = terminal_table(model)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert "failed ↓" in lines[0] and "s/edit ↓" in lines[0] and "sdedit" in text
    assert sum(c in lines[0] for c in names) >= 2  # headline metric columns kept
    assert render_tables(find_runs([ds]))["terminal"] == text
    full = render_tables(find_runs([ds]))["markdown"].splitlines()[0]
    assert max(len(line) for line in [full]) > 120  # the full table (in the files) is wider


# --------------------------------------------------------------------------------------------------------
# Paper comparison: like with like
# --------------------------------------------------------------------------------------------------------
PIE_DEFS = {
    "pie_psnr_unedit": {"name": "pie_psnr_unedit", "higher_is_better": True, "scale": 1.0, "mode": "pie",
                        "definition": "t", "version": "1"},
    "pie_ssim_unedit": {"name": "pie_ssim_unedit", "higher_is_better": True, "scale": 100.0, "mode": "pie",
                        "definition": "t", "version": "2"},
}
PIE_MADE_LIKE_THE_PAPER = {"backbone": {"name": "sd14", "source": "CompVis/stable-diffusion-v1-4",
                                        "resolution": 512},
                           "resolution": 512, "metrics_input": {"jpeg_quality": 75}}


def _pie_run(tmp_path: Path, n: int = 700, extra: dict[str, Any] | None = None,
             definitions: dict[str, Any] | None = None) -> Path:
    ds = tmp_path / "results" / "exp" / "pie_bench"
    rng = np.random.default_rng(7)
    defs = definitions or PIE_DEFS
    values = {m: (27 + rng.standard_normal(n)).tolist() if "psnr" in m else (0.85 + 0.01 * rng.standard_normal(n))
              .tolist() for m in defs}
    run = write_exact_run(ds, "p2p+direct", values, definitions=defs, results_extra=PIE_MADE_LIKE_THE_PAPER
                          | {"method_settings": {"name": "p2p+direct", "editor": {"name": "p2p"},
                                                 "inversion": {"name": "direct"}}} | (extra or {}))
    return run


def test_paper_comparison_when_made_like_the_paper(tmp_path: Path) -> None:
    comparison = compare_with_papers(build_model(find_runs([_pie_run(tmp_path)])).runs)
    assert comparison is not None and not comparison.frame.empty
    row = comparison.frame[comparison.frame["column"] == "Background SSIM"].iloc[0]
    assert row["paper"] == 84.76 and row["ours"] == pytest.approx(85.0, abs=0.2)
    assert "made differently" not in comparison.markdown


@pytest.mark.parametrize(("extra", "n", "says"), [
    ({}, 20, "dataset: 20 samples (paper: all 700)"),
    ({"backbone": {"name": "sd15", "source": "runwayml/stable-diffusion-v1-5", "resolution": 512}}, 700,
     "backbone: runwayml/stable-diffusion-v1-5 (paper: CompVis/stable-diffusion-v1-4)"),
    ({"resolution": 64}, 700, "resolution: 64 (paper: 512)"),
    ({"metrics_input": {"jpeg_quality": None}}, 700, "edits scored as PNG (paper: JPEG q75"),
])
def test_paper_comparison_refuses_unlike_runs_and_says_why(tmp_path: Path, extra: dict[str, Any], n: int,
                                                           says: str) -> None:
    comparison = compare_with_papers(build_model(find_runs([_pie_run(tmp_path, n, extra)])).runs)
    assert comparison is not None and comparison.frame.empty  # no difference shown
    assert says in comparison.markdown and "made differently for 1 run(s)" in comparison.markdown


def test_offline_stand_ins_and_old_definitions_are_never_compared(tmp_path: Path) -> None:
    defs = dict(PIE_DEFS) | {"pie_clip_whole[sw-clip]": {"name": "pie_clip_whole[sw-clip]", "higher_is_better": True,
                                                         "scale": 1.0, "mode": "pie", "definition": "t",
                                                         "version": "1"}}
    defs["pie_ssim_unedit"] = defs["pie_ssim_unedit"] | {"version": "1"}  # SSIM of the uncropped map
    comparison = compare_with_papers(build_model(find_runs([_pie_run(tmp_path, definitions=defs)])).runs)
    md = comparison.markdown
    assert "not compared: CLIP similarity (whole): column pie_clip_whole[sw-clip] (paper's: pie_clip_whole[vit-l14])" \
        in md
    assert "not compared: Background SSIM: definition version 1 (paper's: 2)" in md
    assert set(comparison.frame["column"]) == {"Background PSNR"}  # the one column made like the paper's


def test_tables_made_on_random_weights_say_so(tmp_path: Path) -> None:
    ds = tmp_path / "results" / "exp" / "data"
    write_exact_run(ds, "A", {"edit_acc": [1.0, 0.0]},
                    results_extra={"backbone": {"name": "toy", "source": "toy(seed=0, random weights)"}})
    write_exact_run(ds, "B", {"edit_acc": [1.0, 1.0]})
    out = render_tables(find_runs([ds]))
    assert out["terminal"].startswith("WARNING: A ran on a toy backbone with RANDOM weights")
    assert "measure nothing" in out["markdown"] and "measure nothing" in out["html"]
    single = render_tables([next(p.parent for p in ds.rglob("results.json") if p.parent.name.startswith("A-"))])
    assert "RANDOM weights" in single["markdown"]
