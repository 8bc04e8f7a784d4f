"""Runner: resumption, cache keys, determinism and error isolation, on the toy backbone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg, toy_overrides, write_folder_dataset
from PIL import Image

from editlab.bench.runner import run, run_dir_for
from editlab.bench.tables import build_table


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
