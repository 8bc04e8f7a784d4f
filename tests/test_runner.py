"""Runner: resumption, cache keys, determinism and error isolation, on the toy backbone."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg, toy_overrides, write_folder_dataset
from PIL import Image

from editlab.bench.runner import run, run_dir_for
from editlab.bench.tables import build_model, build_table, find_runs


def _records(run_dir: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())}


def test_error_isolation_and_not_applicable(folder_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(toy_overrides(folder_dataset, tmp_path / "res", "method=sdedit"))
    out = run(cfg, show_table=False)
    recs = _records(out.run_dir)
    assert [recs[f"good{i}"]["status"] for i in range(3)] == ["ok"] * 3
    assert recs["corrupt"]["status"] == "error" and "not a readable image" in recs["corrupt"]["error"]
    assert recs["wrong_mask"]["status"] == "error"
    assert "mask size (32, 32) differs from image size (64, 64)" in recs["wrong_mask"]["error"]
    assert recs["no_prompts"]["status"] == "not_applicable" and "prompt pair" in recs["no_prompts"]["error"]
    assert recs["empty_prompt"]["status"] == "error" and recs["empty_prompt"]["error"] == "empty target prompt"
    assert out.results["counts"] == {"ok": 3, "error": 3, "not_applicable": 1, "total": 7, "expected": 7}
    assert out.results["complete"] and out.results["missing"] == 0
    for i in range(3):
        rec = recs[f"good{i}"]
        assert (out.run_dir / rec["image"]).exists()
        assert rec["wall_time_s"] > 0 and rec["peak_mem_mb"] > 0 and rec["peak_mem_kind"] == "cpu_rss_sampled"
        assert 0 < rec["metrics"]["bg_psnr"] <= 100 and rec["metrics"]["bg_mse"] >= 0
    for name in ("config.yaml", "env.json", "results.json", "table.md", "table.csv", "table.tex", "backbone.json"):
        assert (out.run_dir / name).exists(), name
    env = json.loads((out.run_dir / "env.json").read_text())
    assert {"python", "torch", "diffusers", "transformers", "editlab", "git_revision", "device_name"} <= set(env)


def test_resume_recomputes_only_missing(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=4, broken=False)
    cfg = compose_cfg(toy_overrides(data, tmp_path / "res", "method=ddim_swap"))
    first = run(cfg, show_table=False)
    assert first.edited == 4 and first.reused == 0
    table1, _ = build_table([first.run_dir])
    images1 = {p.name: p.read_bytes() for p in (first.run_dir / "images").iterdir()}
    # delete one image and one record: exactly those two samples are edited again
    (first.run_dir / "images" / "good1.png").unlink()
    (first.run_dir / "records" / "good3.json").unlink()
    second = run(cfg, show_table=False)
    assert second.edited == 2 and second.reused == 2
    images2 = {p.name: p.read_bytes() for p in (second.run_dir / "images").iterdir()}
    assert images1 == images2  # bit-identical on CPU
    table2, _ = build_table([second.run_dir])
    cols = [c for c in table1.columns if not c.startswith(("s/edit", "peak"))]
    assert table1[cols].equals(table2[cols])
    # nothing left to do: a third run edits nothing
    assert run(cfg, show_table=False).edited == 0


def test_settings_never_collide_and_seed_changes_output(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=1, broken=False)
    base = toy_overrides(data, tmp_path / "res", "method=sdedit")
    dirs = {run_dir_for(compose_cfg(base + [o])) for o in ("method.strength=0.5", "method.strength=0.6", "seed=1")}
    assert len(dirs) == 3
    a = run(compose_cfg(base + ["seed=0"]), show_table=False)
    b = run(compose_cfg(base + ["seed=1"]), show_table=False)
    img_a = np.asarray(Image.open(a.run_dir / "images" / "good0.png"))
    img_b = np.asarray(Image.open(b.run_dir / "images" / "good0.png"))
    assert not np.array_equal(img_a, img_b)


def test_metrics_recomputed_without_reediting(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    base = toy_overrides(data, tmp_path / "res", "method=sdedit")
    first = run(compose_cfg(base + ["~metrics.bg_ssim"]), show_table=False)
    assert "bg_ssim" not in _records(first.run_dir)["good0"]["metrics"]
    second = run(compose_cfg(base), show_table=False)
    assert second.edited == 0
    assert "bg_ssim" in _records(second.run_dir)["good0"]["metrics"]



@pytest.mark.parametrize("target,message", [
    ("tests_support.NaNMethod", "non-finite values"),
    ("tests_support.RaisingMethod", "method raised RuntimeError: boom"),
])
def test_failing_method_is_recorded(tmp_path: Path, target: str, message: str) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    cfg = compose_cfg(toy_overrides(data, tmp_path / "res", "method=sdedit", "metrics=none"))
    cfg.method = {"_target_": target, "name": target.split(".")[-1]}
    out = run(cfg, show_table=False)
    recs = _records(out.run_dir)
    assert recs["good0"]["status"] == "error" and message in recs["good0"]["error"]
    assert recs["good1"]["status"] == "ok"  # the run went on
    assert math.isnan(out.results["metrics"]["wall_time_s"]["mean"]) is False


def test_setup_failure_skips_the_grid_point_not_the_grid(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    cfg = compose_cfg(toy_overrides(data, tmp_path / "res", "method=sdedit", "metrics=none"))
    cfg.method = {"_target_": "tests_support.UnavailableMethod", "name": "unavailable"}
    out = run(cfg, show_table=False)
    assert "needs public weights" in out.results["setup_error"]
    assert out.edited == 0 and out.results["counts"]["total"] == 0 and not out.results["complete"]
    assert not list((out.run_dir / "records").iterdir())  # nothing cached: a later run retries


# --------------------------------------------------------------------------------------------------------
# Chained samples: MagicBrush's multi-turn setting (turn k edits the method's own output of turn k-1)
# --------------------------------------------------------------------------------------------------------
def _iterative_cfg(tmp_path: Path, evaluation: str, **method: str):
    from test_datasets_benchmarks import write_magicbrush

    root = tmp_path / "mb"
    if not root.exists():
        write_magicbrush(root)
    cfg = compose_cfg(["backbone=toy", "backbone.num_inference_steps=2", "dataset=magicbrush",
                       f"dataset.root={root}", "dataset.iterative=true", f"dataset.evaluation={evaluation}",
                       f"results_dir={tmp_path / 'res'}", "device=cpu", "metrics=none"])
    cfg.method = {"_target_": "tests_support.InvertMethod", "name": "invert", **method}
    cfg.metrics = {"bg_mse": {"_target_": "editlab.metrics.masked.BackgroundMSE"},
                   "gt_psnr": {"_target_": "editlab.metrics.fidelity.TargetPSNR"}}
    return cfg


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_iterative_turn_edits_previous_output_and_final_turn_scores_last(tmp_path: Path) -> None:
    from test_datasets_benchmarks import MB_BOXES

    out = run(_iterative_cfg(tmp_path, "final_turn"), show_table=False)
    d, recs = out.run_dir, _records(out.run_dir)
    assert list(recs) == ["100_t1", "100_t2", "200_t1"] and out.edited == 3
    original = _pixels(tmp_path / "mb" / "test" / "images" / "100" / "100-input.png")
    turn1 = _pixels(d / "images" / "100_t1.png")
    assert np.array_equal(_pixels(d / recs["100_t1"]["extras"]["seen"]), original)
    assert np.array_equal(turn1, 255 - original)
    # turn 2 was given exactly turn 1's cached output, so inverting it again gives the original back
    assert np.array_equal(_pixels(d / recs["100_t2"]["extras"]["seen"]), turn1)
    assert np.array_equal(_pixels(d / "images" / "100_t2.png"), original)
    assert recs["100_t2"]["chain_from"] == "100_t1" and "chain_from" not in recs["200_t1"]
    # final_turn: the earlier turn is edited and recorded, but neither scored nor counted
    assert recs["100_t1"]["scored"] is False and "metrics" not in recs["100_t1"]
    assert "scored" not in recs["100_t2"] and set(recs["100_t2"]["metrics"]) == {"bg_mse", "gt_psnr"}
    assert out.results["counts"] == {"ok": 2, "error": 0, "not_applicable": 0, "total": 2, "unscored": 1,
                                     "expected": 3}
    assert out.results["metrics"]["bg_mse"]["n"] == 2 and out.results["metrics"]["wall_time_s"]["n"] == 3
    # source metrics compare a chained turn with the image it was edited from (turn 1's output)
    x0, y0, x1, y1 = MB_BOXES[("100", 2)]
    keep = np.ones((64, 64), bool)
    keep[y0:y1, x0:x1] = False
    expected = (((original - turn1) / 255.0) ** 2)[keep].mean()
    assert recs["100_t2"]["metrics"]["bg_mse"] == pytest.approx(expected, rel=1e-5)
    # all_turn on the same run folder: nothing is edited again, every turn is scored
    again = run(_iterative_cfg(tmp_path, "all_turn"), show_table=False)
    assert again.run_dir == d and again.edited == 0
    assert again.results["counts"] == {"ok": 3, "error": 0, "not_applicable": 0, "total": 3, "expected": 3}
    assert "scored" not in _records(d)["100_t1"] and "bg_mse" in _records(d)["100_t1"]["metrics"]


def test_iterative_failed_turn_gives_next_turn_a_specific_error(tmp_path: Path) -> None:
    out = run(_iterative_cfg(tmp_path, "final_turn", fail_on="100_t1"), show_table=False)
    recs = _records(out.run_dir)
    assert recs["100_t1"]["status"] == "error" and recs["100_t1"]["error"] == "method raised RuntimeError: boom"
    assert recs["100_t2"]["status"] == "error"
    assert recs["100_t2"]["error"] == "previous turn '100_t1' has no edited output: method raised RuntimeError: boom"
    assert recs["200_t1"]["status"] == "ok"  # the run went on
    assert out.results["complete"]
    assert out.results["counts"] == {"ok": 1, "error": 1, "not_applicable": 0, "total": 2, "unscored": 1,
                                     "expected": 3}
    assert run(_iterative_cfg(tmp_path, "final_turn", fail_on="100_t1"), show_table=False).edited == 0


def test_iterative_resume_recomputes_nothing_and_a_redone_turn_redoes_the_next(tmp_path: Path) -> None:
    cfg = _iterative_cfg(tmp_path, "all_turn")
    first = run(cfg, show_table=False)
    images = {p.name: p.read_bytes() for p in (first.run_dir / "images").iterdir()}
    second = run(cfg, show_table=False)
    assert second.edited == 0 and second.reused == 3
    # a turn edited again makes the turn chained to it stale (its source may have changed); other sessions are kept
    (first.run_dir / "records" / "100_t1.json").unlink()
    third = run(cfg, show_table=False)
    assert third.edited == 2 and third.reused == 1
    assert {p.name: p.read_bytes() for p in (first.run_dir / "images").iterdir()} == images
    # a stored output that changed under a chained turn is noticed as well
    Image.new("RGB", (64, 64), (9, 9, 9)).save(first.run_dir / "images" / "100_t1.png")
    fourth = run(cfg, show_table=False)
    assert fourth.edited == 1
    assert np.array_equal(_pixels(first.run_dir / "images" / "100_t2.png"), np.full((64, 64, 3), 246))
    # the same folder without iterative: turn 1 (unchained either way) is kept, the chained turn is edited again
    cfg.dataset.iterative = False
    fifth = run(cfg, show_table=False)
    assert fifth.run_dir == first.run_dir and fifth.edited == 1
    assert "chain_from" not in _records(first.run_dir)["100_t2"]


def test_iterative_gallery_shows_what_each_turn_was_edited_from_and_what_is_unscored(tmp_path: Path) -> None:
    from editlab.reports.gallery import render_gallery

    out = run(_iterative_cfg(tmp_path, "final_turn"), show_table=False)
    html = render_gallery(build_model(find_runs([out.run_dir])).runs, tmp_path / "gallery.html").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r'data-id="([^"]+)">(.*?)</tr>', html, re.S)}
    assert set(rows) == {"100_t1", "100_t2", "200_t1"}
    # turn 2 shows the method's own turn-1 output as what it edited, and says the source column is the dataset's
    assert "edited from 100_t1" in rows["100_t2"] and "each method edited its own previous turn" in rows["100_t2"]
    assert "edited from" not in rows["200_t1"] and "edited from" not in rows["100_t1"]
    # final_turn: the earlier turn is marked as not scored, the scored turns are not
    assert "not scored" in rows["100_t1"]
    assert "not scored" not in rows["100_t2"] and "not scored" not in rows["200_t1"]


def test_iterative_rating_page_rates_scored_turns_beside_what_was_edited(tmp_path: Path) -> None:
    from editlab.reports.html import image_data_uri
    from editlab.reports.human import export_rating_page

    out = run(_iterative_cfg(tmp_path, "final_turn"), show_table=False)
    runs = build_model(find_runs([out.run_dir])).runs
    paths = export_rating_page(runs, tmp_path / "rate", mode="likert", thumb=64)
    key = json.loads(paths["key"].read_text())["items"]
    assert sorted(v["sample_id"] for v in key.values()) == ["100_t2", "200_t1"]  # the unscored turn is not rated
    html = paths["page"].read_text()
    with Image.open(out.run_dir / "images" / "100_t1.png") as im:
        turn1 = image_data_uri(im.convert("RGB"), 64)
    assert html.count("what edit edited") == 1 and turn1 in html  # turn 2 is shown beside turn 1's output
