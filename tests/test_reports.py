"""Reports from stored results: tables, paper comparison, plots, gallery, pilot report, human evaluation.

Most tests use a synthetic results folder in the exact layout the runner writes (results.json, samples.jsonl,
images/, extras/, config.yaml, env.json, backbone.json) so that they need no model; one test renders a folder
made by a real run of the toy backbone.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from editlab.bench.stats import summarize
from editlab.bench.tables import (
    build_model,
    find_runs,
    main_metrics,
    metric_family,
    render_tables,
    split_method,
)
from editlab.files import safe_name
from editlab.reports import ReportOptions, render_report
from editlab.reports.gallery import render_gallery
from editlab.reports.human import (
    analyse_ratings,
    bradley_terry,
    export_rating_page,
    krippendorff_alpha,
    load_ratings,
    render_human,
)
from editlab.reports.paper import DATA_DIR, compare_with_papers, reference_tables
from editlab.reports.pilot import pilot_rows, render_pilot, wilson_interval
from editlab.reports.plots import pareto_front, render_plots

HOSTILE = ['a <script>window.__pwned = 1</script> cat', 'a dog "><img src=x onerror="window.__pwned = 1">',
           "a bird & a <b>bold</b> tree"]
TASKS = ["color_change", "object_removal", "style_change"]

CLEAN_METRICS = {
    "bg_psnr": {"higher_is_better": True, "scale": 1.0, "mode": "clean", "base": 20.0, "spread": 2.0},
    "clip_score": {"higher_is_better": True, "scale": 1.0, "mode": "clean", "base": 25.0, "spread": 1.0},
    "structure_dist[clip]": {"higher_is_better": False, "scale": 1.0, "mode": "clean", "base": 0.2, "spread": 0.02},
}
PIE_METRICS = {
    "pie_structure_dist[dino_vitb8]": {"higher_is_better": False, "scale": 1e3, "mode": "pie", "base": 0.012,
                                       "spread": 0.002, "version": "2"},
    "pie_psnr_unedit": {"higher_is_better": True, "scale": 1.0, "mode": "pie", "base": 27.0, "spread": 1.5},
    "pie_clip_whole[vit-l14]": {"higher_is_better": True, "scale": 1.0, "mode": "pie", "base": 25.0, "spread": 0.5},
}
#: How PIE-Bench's Table 1 numbers were made (editlab.reports.paper.like_with_like): scored as JPEG q75.
PIE_SCORING = {"metrics_input": {"jpeg_quality": 75}}


def write_dataset(root: Path, n: int) -> Path:
    """A folder dataset with masks, ground truth, three task types and hostile prompt text."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        img = np.full((32, 32, 3), rng.integers(0, 255, 3), np.uint8)
        Image.fromarray(img).save(root / f"src{i}.png")
        Image.fromarray((255 - img).astype(np.uint8)).save(root / f"gt{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8:24] = 255
        Image.fromarray(mask).save(root / f"mask{i}.png")
        rows.append({"id": f"s{i}", "image": f"src{i}.png", "mask": f"mask{i}.png", "target": f"gt{i}.png",
                     "source_prompt": HOSTILE[i % 3], "target_prompt": f"target {i} <i>x</i>",
                     "instruction": f"make it <u>blue</u> #{i}", "task_type": TASKS[i % 3]})
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_run(dataset_dir: Path, data: Path, method: str, offset: float, n: int, metrics: dict[str, dict[str, Any]],
              strategy: str = "training- and fine-tuning-free", parts: tuple[str, str] | None = None,
              seconds: float = 1.0, errors: int = 0, extras: bool = False,
              results_extra: dict[str, Any] | None = None) -> Path:
    """One run folder as the runner writes it; metric values = base + spread * (offset + noise), better with a
    larger offset whatever the metric's direction."""
    run_dir = dataset_dir / f"{method}-{zlib.crc32(method.encode()):010d}"
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(method.encode()))
    records = []
    for i in range(n):
        rec: dict[str, Any] = {"id": f"s{i}", "method": method, "seed": i, "task_type": TASKS[i % 3],
                               "source_prompt": HOSTILE[i % 3], "target_prompt": f"target {i} <i>x</i>",
                               "instruction": f"make it <u>blue</u> #{i}"}
        if i < errors:
            records.append(rec | {"status": "error", "error": "method raised RuntimeError: <boom>"})
            continue
        Image.fromarray(np.full((32, 32, 3), (40 * i) % 255, np.uint8)).save(run_dir / "images" / f"s{i}.png")
        rec |= {"status": "ok", "error": None, "image": f"images/s{i}.png", "wall_time_s": seconds * (1 + 0.1 * i),
                "gpu_time_s": None, "peak_mem_mb": 1000.0 + 10 * i, "peak_mem_kind": "cuda_max_allocated",
                "metrics": {name: m["base"] + m["spread"] * ((1 if m["higher_is_better"] else -1) * offset
                                                             + 0.1 * rng.standard_normal())
                            for name, m in metrics.items()}}
        if extras:
            (run_dir / "extras").mkdir(exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(run_dir / "extras" / f"s{i}.mask.png")
            rec["extras"] = {"mask": f"extras/s{i}.mask.png"}
        records.append(rec)
    ok = [r for r in records if r["status"] == "ok"]
    aggregates = {name: summarize(np.array([r["metrics"][name] for r in ok]), m["higher_is_better"])
                  for name, m in metrics.items()}
    aggregates["wall_time_s"] = summarize(np.array([r["wall_time_s"] for r in ok]), False)
    aggregates["peak_mem_mb"] = summarize(np.array([r["peak_mem_mb"] for r in ok]), False)
    settings: dict[str, Any] = {"_target_": "x.Method", "name": method}
    if parts:
        settings |= {"editor": {"name": parts[0]}, "inversion": {"name": parts[1]}}
    backbone = {"name": "sd14", "dtype": "float16", "parameters": 1_066_235_307, "resolution": 512}
    results = {
        "experiment": "exp", "dataset": dataset_dir.name, "method": method, "run_key": run_dir.name[-10:], "seed": 0,
        "taxonomy": {"learning_strategy": strategy, "conditions": ["prompt pair"], "tasks": TASKS, "paper": ""},
        "method_settings": settings, "backbone": backbone,
        "metric_modes": sorted({m["mode"] for m in metrics.values()}),
        "metric_definitions": {name: {"name": name, "higher_is_better": m["higher_is_better"], "scale": m["scale"],
                                      "mode": m["mode"], "definition": "test", "version": m.get("version", "1")}
                               for name, m in metrics.items()},
        "dataset_metrics": {},
        "counts": {"ok": len(ok), "error": errors, "not_applicable": 0, "total": n, "expected": n},
        "complete": True, "missing": 0, "resolution": backbone["resolution"],
        "metrics": aggregates,
        **(results_extra or {}),
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "backbone.json").write_text(json.dumps(backbone))
    (run_dir / "env.json").write_text(json.dumps({"device": "cuda:0", "device_name": "NVIDIA Test GPU",
                                                  "torch": "2.x", "python": "3.11", "platform": "Linux",
                                                  "editlab": "0.1.0", "git_revision": "abc"}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"dataset": {
        "name": dataset_dir.name, "_target_": "editlab.datasets.folder.FolderDataset", "root": str(data),
        "samples": "samples.jsonl"}}))
    return run_dir


def make_results(root: Path, n: int = 9) -> Path:
    """A clean-mode experiment: three methods (one clearly best, one with errors and extras)."""
    data = write_dataset(root / "data", n)
    ds = root / "results" / "exp" / "folder"
    write_run(ds, data, "good", 1.0, n, CLEAN_METRICS, seconds=2.0, extras=True)
    write_run(ds, data, "bad", -1.0, n, CLEAN_METRICS, seconds=0.5, errors=2)
    write_run(ds, data, "tuned", 0.0, n, CLEAN_METRICS, strategy="testing-time fine-tuning", seconds=5.0)
    return ds


def make_pie_results(root: Path, n: int = 700) -> Path:
    """A PIE-Bench-mode experiment of inversion x editor methods (named editor+inversion), made as the paper's
    numbers were (all 700 samples, SD 1.4, 512 px, JPEG q75 scoring) unless ``n`` says otherwise."""
    data = write_dataset(root / "data", n)
    ds = root / "results" / "pie" / "pie_bench"
    write_run(ds, data, "p2p+direct", 0.5, n, PIE_METRICS, parts=("p2p", "direct"), results_extra=PIE_SCORING)
    write_run(ds, data, "p2p+ddim", -1.0, n, PIE_METRICS, parts=("p2p", "ddim"), results_extra=PIE_SCORING)
    write_run(ds, data, "masactrl+ddim", 0.0, n, PIE_METRICS, parts=("masactrl", "ddim"), results_extra=PIE_SCORING)
    write_run(ds, data, "sdedit", 0.0, n, PIE_METRICS, results_extra=PIE_SCORING)
    return ds


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return make_results(tmp_path)


# --------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------
def test_split_method_and_metric_family() -> None:
    assert split_method({"method": "p2p+nti", "method_settings": {}}) == ("p2p", "nti")
    assert split_method({"method": "ddim+p2p", "method_settings": {}}) == ("p2p", "ddim")
    assert split_method({"method": "edit", "method_settings": {"editor": {"name": "pnp"},
                                                                "inversion": {"name": "direct"}}}) == ("pnp", "direct")
    assert split_method({"method": "sdedit", "method_settings": {}}) is None
    assert metric_family("pie_structure_dist[dino_vitb8]") == "structure"
    assert metric_family("pie_lpips_unedit") == metric_family("bg_psnr") == "preservation"
    assert metric_family("pie_clip_edited") == metric_family("clip_score") == "text alignment"
    assert metric_family("fid[clip]") == "distribution" and metric_family("gt_psnr") == "ground truth"


def test_pareto_front() -> None:
    # (time, quality): b is dominated by a (slower and worse); c is slower but best; d has no time
    assert pareto_front([1.0, 2.0, 3.0, float("nan")], [0.5, 0.4, 0.9, 1.0]) == [0, 2]
    assert pareto_front([1.0, 2.0], [0.5, 0.4], higher_is_better=False) == [0, 1]


def test_krippendorff_alpha_reference_values() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders x 12 units, missing values
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[row[u] for row in data if row[u] is not None] for u in range(12)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=1e-3)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=1e-3)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=1e-3)
    assert krippendorff_alpha(units, "ratio") == pytest.approx(0.797, abs=1e-3)
    assert krippendorff_alpha([["A", "A"], ["B", "B"]], "nominal") == pytest.approx(1.0)
    assert np.isnan(krippendorff_alpha([["A"], ["B"]], "nominal"))


def test_bradley_terry_orders_methods() -> None:
    comps = [("a", "b", 1.0)] * 8 + [("a", "b", 0.0)] * 2 + [("b", "c", 1.0)] * 8 + [("b", "c", 0.5)] * 2
    bt = bradley_terry(comps, ["a", "b", "c"])
    assert bt["a"] > bt["b"] > bt["c"]
    assert np.isfinite(list(bt.values())).all()  # the winless c stays finite thanks to the prior


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35
    assert np.isnan(wilson_interval(0, 0)[0])


def test_paper_table_data_is_complete_and_cited() -> None:
    tables = reference_tables()
    assert [t["file"] for t in tables] == ["pie_bench_table1.yaml"]
    table = tables[0]
    assert "arXiv:2310.01506" in table["source"]["citation"] and table["metric_mode"] == "pie"
    labels = [r["label"] for r in table["rows"]]
    for needed in ("DDIM+P2P", "NT+P2P", "NP+P2P", "StyleD+P2P", "DirectInv+P2P", "DDIM+MasaCtrl", "DDIM+P2P-Zero",
                   "DDIM+PnP"):
        assert needed in labels
    for row in table["rows"]:
        assert set(row["values"]) == set(table["columns"])
        assert all(v is None or isinstance(v, (int, float)) for v in row["values"].values())
    direct = next(r for r in table["rows"] if r["label"] == "DirectInv+P2P")["values"]
    assert direct == {"structure": 11.65, "psnr": 27.22, "lpips": 54.55, "mse": 32.86, "ssim": 84.76,
                      "clip_whole": 25.02, "clip_edited": 22.10}
    assert {c["scale"] for c in table["columns"].values()} == {1, 100, 1000, 10000}
    assert (DATA_DIR / "pie_bench_table1.yaml").exists()


# --------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------
def test_tables_mark_best_significance_groups_and_formats(tmp_path: Path) -> None:
    # 24 samples: after Holm correction over the table's 6 comparisons, 9 samples could not show significance
    results = make_results(tmp_path, n=24)
    out = render_tables(find_runs([results]), out_dir=results)
    md = out["markdown"]
    lines = {line.split("|")[2].strip(): line for line in md.splitlines() if line.startswith("| ")}
    # "good" is best on every quality column; "bad" is significantly worse on the samples both edited
    assert "**" in lines["good"] and "†" in lines["bad"] and "**" not in lines["bad"].split("|")[3]
    # grouped by learning strategy: testing-time fine-tuning before training-free
    order = [line.split("|")[2].strip() for line in md.splitlines()[2:5]]
    assert order == ["tuned", "bad", "good"]
    assert "Column groups: structure: structure_dist[clip] ↓; preservation: bg_psnr ↑" in md
    assert "Per task type: mean clip_score ↑" in md and "stylistic · color_change" in md
    assert "semantic · object_removal" in md and "stylistic · style_change" in md
    assert "Paper comparison" not in md  # not PIE-Bench
    tex = (results / "table.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert "\\cmidrule(lr)" in tex and "\\textbf{" in tex and "$^\\dagger$" in tex and "$\\pm$" in tex
    assert "\\multicolumn{" in tex and "\\textit{testing-time fine-tuning}" in tex
    assert (results / "table_tasks.tex").read_text().count("\\cmidrule") == 2  # semantic, stylistic
    html = (results / "table.html").read_text()
    assert 'class="group">structure</th>' in html and 'class="best"' in html and 'class="sig"' in html
    csv = pd.read_csv(results / "table.csv")
    assert list(csv.columns[:2]) == ["learning strategy", "method"] and not csv.isna().all().any()
    numeric = pd.read_csv(results / "table_numeric.csv")
    assert {"ci_low", "ci_high", "worst_decile", "family"} <= set(numeric.columns)
    paired = pd.read_csv(results / "paired.csv")
    assert paired["significant"].any()
    # deterministic: a second render gives identical files
    before = {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()}
    render_tables(find_runs([results]), out_dir=results)
    assert before == {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()}


def test_inversion_editor_grid_and_paper_comparison(tmp_path: Path) -> None:
    ds = make_pie_results(tmp_path)
    out = render_tables(find_runs([ds]), out_dir=ds)
    md = out["markdown"]
    assert [c.strip() for c in md.splitlines()[0].split("|")[3:5]] == ["inversion", "editor"]
    assert "Inversion × editor: mean pie_clip_whole[vit-l14] ↑" in md
    assert "Paper comparison: PIE-Bench Table 1" in md and "arXiv:2310.01506" in md
    comp = pd.read_csv(ds / "paper_comparison.csv")
    assert set(comp["reference_row"]) == {"DirectInv+P2P", "DDIM+P2P", "DDIM+MasaCtrl"}  # sdedit has no paper row
    row = comp[(comp["reference_row"] == "DirectInv+P2P") & (comp["column"] == "Structure distance")].iloc[0]
    assert row["paper"] == 11.65 and row["scale"] == 1000
    assert row["ours"] == pytest.approx(row["diff"] + 11.65)
    assert 8.0 < row["ours"] < 14.0  # 0.012 - 0.5 * 0.002 raw, x1e3
    assert set(comp["column"]) == {"Structure distance", "Background PSNR", "CLIP similarity (whole)"}


def test_paper_comparison_needs_same_dataset_and_mode(tmp_path: Path) -> None:
    ds = make_pie_results(tmp_path)
    model = build_model(find_runs([ds]))
    assert compare_with_papers(model.runs) is not None
    for run in model.runs:  # the same runs on another dataset: nothing to compare with
        run.results["dataset"] = "shapesworld"
    assert compare_with_papers(model.runs) is None
    for run in model.runs:  # PIE-Bench data but editlab's clean metric definitions: said, and no difference shown
        run.results["dataset"] = "pie_bench"
        for d in run.results["metric_definitions"].values():
            d["mode"] = "clean"
    comparison = compare_with_papers(model.runs)
    assert comparison is not None and comparison.frame.empty
    assert "not compared: Background PSNR: metric mode clean (paper: pie)" in comparison.markdown


def test_several_datasets_are_never_paired_across(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", 6)
    for name in ("folder", "other"):
        ds = tmp_path / "results" / "exp" / name
        write_run(ds, data, "good", 1.0, 6, CLEAN_METRICS)
        write_run(ds, data, "bad", -1.0, 6, CLEAN_METRICS)
    model = build_model(find_runs([tmp_path / "results"]))
    assert model.meta_columns[:3] == ["learning strategy", "dataset", "method"]
    assert sorted(r["meta"]["method"] for r in model.rows) == ["bad (dataset=folder)", "bad (dataset=other)",
                                                               "good (dataset=folder)", "good (dataset=other)"]
    # pairs are formed within a dataset only: every pair's two runs are of the dataset the row names
    assert len(model.paired) == 2 * 3  # one pair per dataset x 3 metrics
    for rec in model.paired.to_dict("records"):
        assert rec["method_a"].endswith(f"(dataset={rec['dataset']})")
        assert rec["method_b"].endswith(f"(dataset={rec['dataset']})")
    best = [r["meta"]["method"] for r in model.rows if r["cells"]["bg_psnr ↑"].best]
    assert sorted(best) == ["good (dataset=folder)", "good (dataset=other)"]  # one best per dataset


# --------------------------------------------------------------------------------------------------------
# Plots, gallery, pilot report
# --------------------------------------------------------------------------------------------------------
def test_plots_png_and_svg(tmp_path: Path) -> None:
    ds = make_pie_results(tmp_path)
    model = build_model(find_runs([ds]))
    metrics = main_metrics(model.long)
    assert metrics[0] == "pie_clip_whole[vit-l14]"
    paths = render_plots(model, tmp_path / "plots", metrics[:1])
    names = {p.name for p in paths}
    tag = safe_name(metrics[0])
    assert {"quality_vs_runtime.png", "quality_vs_runtime.svg", f"tasks_{tag}.png", f"spread_{tag}.svg",
            f"grid_{tag}.png"} <= names
    for p in paths:
        assert p.stat().st_size > 1000
    svg = (tmp_path / "plots" / "quality_vs_runtime.svg").read_text()
    assert "Pareto front" in svg and "<dc:date>" not in svg


def test_gallery_escapes_text_and_shows_extras(results: Path) -> None:
    model = build_model(find_runs([results]))
    path = render_gallery(model.runs, results / "gallery.html")
    html = path.read_text()
    assert html.count('<tr class="sample"') == 9
    assert "window.__pwned" in html and "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html and "&lt;u&gt;blue&lt;/u&gt;" in html
    assert html.count("<script>") == 1  # the filter script only
    assert '<option value="color_change">' in html and 'value="m2" checked' in html
    assert "figcaption>mask</figcaption>" in html  # the diagnostic image beside the edit
    assert html.count('alt="ground truth"') == 9 and html.count('alt="source"') == 9
    assert "error: method raised RuntimeError: &lt;boom&gt;" in html
    assert re.search(r'href="good-\d+/images/s0.png"', html)


def test_pilot_report_costs_and_levelling(results: Path) -> None:
    model = build_model(find_runs([results]))
    df = pilot_rows(model, price_per_hour=3.6).set_index("method")
    good = df.loc["good"]
    times = [2.0 * (1 + 0.1 * i) for i in range(9)]
    assert good["s_per_edit_mean"] == pytest.approx(np.mean(times))
    assert good["cost_per_1000"] == pytest.approx(np.mean(times))  # 3.6 / h = 1 per 1,000 s
    assert good["edits_per_hour"] == pytest.approx(3600 / np.mean(times))
    assert good["weight_bytes"] == 2 * 1_066_235_307 and good["failure_rate"] == 0
    assert df.loc["bad", "failure_rate"] == pytest.approx(2 / 9)
    assert "bg_psnr worst_decile" in df.columns
    paths = render_pilot(model, results, price_per_hour=3.6, currency="EUR", manual_minutes=10)
    md = paths["md"].read_text()
    assert "NVIDIA Test GPU" in md and "Dataset: folder (9 samples per method)" in md
    assert "EUR / 1,000 edits" in md and "min saved / edit" in md and "1.07B params, 2.0 GB (float16)" in md
    assert "<html" in paths["html"].read_text()


# --------------------------------------------------------------------------------------------------------
# Human evaluation
# --------------------------------------------------------------------------------------------------------
def _answers(key: dict[str, Any], prefer: str, flip_every: int) -> list[dict[str, Any]]:
    out = []
    for n, (item, k) in enumerate(sorted(key["items"].items())):
        choice = "A" if k["A"] == prefer else "B" if k["B"] == prefer else "tie"
        if flip_every and n % flip_every == 0:
            choice = {"A": "B", "B": "A", "tie": "A"}[choice]
        out.append({"item": item, "choice": choice})
    return out


def test_human_pairwise_roundtrip(results: Path, tmp_path: Path) -> None:
    model = build_model(find_runs([results]))
    paths = export_rating_page(model.runs, tmp_path / "human", "pairwise", max_items=40)
    html = paths["page"].read_text()
    key = json.loads(paths["key"].read_text())
    assert len(key["items"]) == 7 * 3 + 2 * 1  # all pairs of 3 methods; "bad" failed on 2 of the 9 samples
    for label in ("good", "bad", "tuned"):
        assert f">{label}<" not in html and f'"{label}"' not in html  # blind
    assert "make it &lt;u&gt;blue&lt;/u&gt;" in html and html.count("<script>") == 1
    r1 = {"page_id": key["page_id"], "mode": "pairwise", "rater": "ann", "ratings": _answers(key, "good", 0)}
    (tmp_path / "human" / "r1.json").write_text(json.dumps(r1))
    rows = _answers(key, "good", 4)
    csv = "page_id,mode,rater,item,choice\n" + "".join(f"{key['page_id']},pairwise,bob,{r['item']},{r['choice']}\n"
                                                        for r in rows)
    (tmp_path / "human" / "r2.csv").write_text(csv)
    files = [tmp_path / "human" / "r1.json", tmp_path / "human" / "r2.csv"]
    assert len(load_ratings(files)) == 2 * len(key["items"])
    analysis = analyse_ratings(files, paths["key"], n_boot=200)
    scores = analysis["scores"].set_index("method")
    assert scores.index[0] == "good" and scores.loc["good", "bt"] > scores.loc["bad", "bt"]
    assert scores.loc["good", "bt_ci_low"] <= scores.loc["good", "bt"] <= scores.loc["good", "bt_ci_high"]
    assert scores.loc["good", "elo_ci_low"] <= scores.loc["good", "elo"] <= scores.loc["good", "elo_ci_high"]
    alpha = analysis["alpha"]["choice (nominal)"]
    assert 0 < alpha < 1
    out = render_human(analysis, tmp_path / "out")
    md = out["md"].read_text()
    assert "Krippendorff's alpha, choice (nominal)" in md and "Bradley-Terry (95% CI)" in md


def test_human_likert_roundtrip(results: Path, tmp_path: Path) -> None:
    model = build_model(find_runs([results]))
    paths = export_rating_page(model.runs, tmp_path, "likert", max_items=100)
    key = json.loads(paths["key"].read_text())
    assert len(key["items"]) == 9 + 7 + 9
    html = paths["page"].read_text()
    assert 'data-criterion="preservation"' in html and "Editing accuracy" in html
    ratings = []
    for rater, bias in (("ann", 0), ("bob", 1)):
        for item, k in key["items"].items():
            base = {"good": 8, "tuned": 5, "bad": 2}[k["method"]]
            ratings.append({"item": item, "accuracy": base + bias, "preservation": base, "quality": base - bias})
        (tmp_path / f"{rater}.json").write_text(json.dumps({"page_id": key["page_id"], "mode": "likert",
                                                             "rater": rater, "ratings": ratings[-len(key["items"]):]}))
    analysis = analyse_ratings([tmp_path / "ann.json", tmp_path / "bob.json"], paths["key"], n_boot=100)
    likert = analysis["likert"].set_index("method")
    assert likert.loc["good", "preservation"] == 8 and likert.loc["bad", "accuracy"] == 2.5
    assert analysis["alpha"]["preservation (interval)"] == pytest.approx(1.0)
    assert analysis["scores"]["method"].iloc[0] == "good"


# --------------------------------------------------------------------------------------------------------
# The command, on synthetic and on real stored results
# --------------------------------------------------------------------------------------------------------
def test_render_report_writes_everything(results: Path, tmp_path: Path) -> None:
    out = render_report(find_runs([results]), tmp_path / "report",
                        ReportOptions(export_rating_page="pairwise", price_per_hour=1.0, plots=False))
    files = out["files"]
    assert "plots" not in files  # covered by test_plots_png_and_svg
    for section in ("tables", "gallery", "pilot", "rating page", "index"):
        assert files[section] and all(p.exists() for p in files[section]), section
    index = (tmp_path / "report" / "index.html").read_text()
    assert 'href="gallery.html"' in index and 'href="pilot.html"' in index and 'href="human/rating_page.html"' in index


def test_report_command_on_a_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import compose_cfg, toy_overrides, write_folder_dataset

    from editlab.bench.cli import main
    from editlab.bench.runner import run

    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=True)
    outcome = run(compose_cfg(toy_overrides(data, tmp_path / "res", "method=sdedit", "metrics=none")), show_table=False)
    first = (outcome.run_dir / "table.md").read_text()
    main(["report", str(outcome.run_dir), "--out", str(tmp_path / "rep"), "--export-rating-page", "likert",
          "--price-per-hour", "4"])
    printed = capsys.readouterr().out
    assert "reports written to" in printed and "gallery.html" in printed
    rep = tmp_path / "rep"
    assert (rep / "table.md").read_text() == first  # the runner's table, re-rendered from stored results
    gallery = (rep / "gallery.html").read_text()
    assert gallery.count('<tr class="sample"') == 6 and gallery.count('alt="source"') >= 2
    assert "4 USD per device-hour" in (rep / "pilot.md").read_text()
    assert (rep / "human" / "rating_page.html").exists()
