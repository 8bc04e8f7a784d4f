"""Scale-out and reliability: sharding across processes, crash safety, and a corpus of bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, toy_overrides, write_folder_dataset
from PIL import Image

from editlab.bench.runner import assemble, resolve_shard, run, shard_ids
from editlab.bench.tables import build_table
from editlab.datasets.base import EditDataset
from editlab.methods.base import EditMethod
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy

ROOT = Path(__file__).resolve().parent.parent


def _records(run_dir: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())}


def test_shard_assignment_is_a_partition_by_source() -> None:
    class Shared(EditDataset):
        def _index(self):
            return [(f"img{i // 3}-edit{i % 3}", None) for i in range(30)]

        def load(self, sample_id):
            raise NotImplementedError

        def source_key(self, sample_id):
            return sample_id.split("-")[0]

    ds = Shared()
    ids = ds.ids()
    parts = [shard_ids(ds, ids, s, 3) for s in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids)
    for part in parts:  # all edits of a source on one shard
        for sid in part:
            assert all(f"{sid.split('-')[0]}-edit{k}" in part for k in range(3))
    assert resolve_shard({"shard": 1, "num_shards": 3}) == (1, 3)
    with pytest.raises(ValueError, match="runner.shard"):
        resolve_shard({"shard": 3, "num_shards": 3})


def test_auto_shard_reads_torchrun_environment(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_shard({"shard": "auto", "num_shards": 1}) == (2, 4)


@pytest.mark.slow
def test_three_concurrent_shards_equal_one_process(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=9, broken=True)
    single = run(compose_cfg(toy_overrides(data, tmp_path / "one", "method=sdedit")), show_table=False)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "editlab.bench.cli", "run", "method=sdedit",
             *toy_overrides(data, tmp_path / "three"), f"runner.shard={i}", "runner.num_shards=3",
             f"hydra.sweep.dir={tmp_path / 'hydra' / str(i)}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        for i in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    sharded_dir = tmp_path / "three" / single.run_dir.relative_to(tmp_path / "one")
    results = json.loads((sharded_dir / "results.json").read_text())
    assert results["complete"] and results["num_shards"] == 3
    a, b = _records(single.run_dir), _records(sharded_dir)
    assert set(a) == set(b)
    for sid in a:
        assert a[sid]["status"] == b[sid]["status"] and a[sid].get("error") == b[sid].get("error")
        ma, mb = a[sid].get("metrics") or {}, b[sid].get("metrics") or {}
        assert ma.keys() == mb.keys()
        for k in ma:  # metric batches differ between 1 and 3 workers: float32 batched kernels may differ in ulps
            assert (ma[k] is None and mb[k] is None) or ma[k] == pytest.approx(mb[k], rel=1e-5, abs=1e-7), (sid, k)
        if a[sid]["status"] == "ok":
            assert (single.run_dir / a[sid]["image"]).read_bytes() == (sharded_dir / b[sid]["image"]).read_bytes()
    t1, _ = build_table([single.run_dir])
    t3, _ = build_table([sharded_dir])
    cols = [c for c in t1.columns if not c.startswith(("s/edit", "peak"))]
    assert t1[cols].equals(t3[cols])


def test_report_merges_a_run_whose_last_shard_has_not_assembled(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=6, broken=False)
    base = toy_overrides(data, tmp_path / "res", "method=sdedit", "runner.num_shards=2")
    first = run(compose_cfg(base + ["runner.shard=0"]), show_table=False)
    assert not first.results["complete"]
    second = run(compose_cfg(base + ["runner.shard=1"]), show_table=False)
    assert second.results["complete"] and second.results["counts"]["ok"] == 6
    # simulate a stale partial results.json (e.g. the last worker was killed before assembling)
    partial = dict(second.results, complete=False)
    (second.run_dir / "results.json").write_text(json.dumps(partial))
    merged = assemble(second.run_dir)
    assert merged["complete"] and merged["counts"]["ok"] == 6 and merged["missing"] == 0


@pytest.mark.slow
def test_kill9_resume_loses_nothing(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from crash_safety import crash_test

    out = crash_test(kills=int(os.environ.get("EDITLAB_CRASH_KILLS", "3")), samples=8, workdir=tmp_path)
    assert out["records"] == out["expected"] == out["jsonl_lines"]
    assert out["tables_equal"] and out["images_identical"]


# ---------------------------------------------------------------------------------------------------------
# A corpus of bad inputs, built by the test
# ---------------------------------------------------------------------------------------------------------
class CorpusDataset(EditDataset):
    """Samples built in memory from a folder of files the test writes; prompts may be anything."""

    def __init__(self, root: str, rows: list[dict]) -> None:
        super().__init__()
        self.root, self.rows = Path(root), {r["id"]: r for r in rows}

    def _index(self):
        return [(i, TaskType.COLOR_CHANGE) for i in self.rows]

    def load(self, sample_id: str) -> Sample:
        from editlab.datasets.folder import open_image as _open_image

        r = self.rows[sample_id]
        return Sample(id=sample_id, source_image=_open_image(self.root / r["image"], "image"),
                      source_prompt=r.get("source_prompt", "a red square"),
                      target_prompt=r.get("target_prompt", "a blue square"),
                      mask=_open_image(self.root / r["mask"], "mask") if r.get("mask") else None)


def _write_corpus(root: Path) -> list[dict]:
    root.mkdir(parents=True)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[16:48, 16:48] = (200, 30, 30)
    Image.fromarray(rgb).save(root / "ok.png")
    Image.fromarray(rgb).save(root / "full.jpg", quality=95)
    (root / "truncated.jpg").write_bytes((root / "full.jpg").read_bytes()[:300])
    (root / "empty.png").write_bytes(b"")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    rgba = np.dstack([rgb, np.full((64, 64), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(root / "sixteen.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "tiny.png")
    Image.new("RGB", (6000, 6000), (10, 200, 10)).save(root / "huge.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "mask_small.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "mask_zero.png")
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(root / "mask_one.png")
    return [
        {"id": "ok", "image": "ok.png"},
        {"id": "truncated_jpeg", "image": "truncated.jpg"},
        {"id": "zero_bytes", "image": "empty.png"},
        {"id": "cmyk", "image": "cmyk.jpg"},
        {"id": "rgba", "image": "rgba.png"},
        {"id": "png16", "image": "sixteen.png"},
        {"id": "one_pixel", "image": "tiny.png"},
        {"id": "huge", "image": "huge.png"},
        {"id": "mask_wrong_size", "image": "ok.png", "mask": "mask_small.png"},
        {"id": "mask_all_zero", "image": "ok.png", "mask": "mask_zero.png"},
        {"id": "mask_all_one", "image": "ok.png", "mask": "mask_one.png"},
        {"id": "empty_prompt", "image": "ok.png", "target_prompt": "   "},
        {"id": "non_utf8_prompt", "image": "ok.png",
         "target_prompt": b"caf\xe9 \xff".decode("utf-8", "surrogateescape")},
        {"id": "long_prompt", "image": "ok.png", "target_prompt": "a blue square " * 400},
    ]


def test_bad_input_corpus(tmp_path: Path) -> None:
    rows = _write_corpus(tmp_path / "corpus")
    cfg = compose_cfg(toy_overrides(tmp_path, tmp_path / "res", "method=sdedit"))
    cfg.dataset = {"_target_": "test_reliability.CorpusDataset", "name": "corpus", "root": str(tmp_path / "corpus"),
                   "rows": rows}
    out = run(cfg, show_table=False)
    recs = _records(out.run_dir)
    assert len(recs) == len(rows)  # every input got a record, the run completed
    expect_error = {
        "truncated_jpeg": "not a readable image",
        "zero_bytes": "not a readable image",
        "one_pixel": "too small (1x1)",
        "mask_wrong_size": "mask size (32, 32) differs from image size (64, 64)",
        "empty_prompt": "empty target prompt",
    }
    for sid, message in expect_error.items():
        assert recs[sid]["status"] == "error" and message in recs[sid]["error"], (sid, recs[sid])
    # documented handling: converted (CMYK, 16-bit), composited on white (RGBA), resized (huge), truncated
    # by the tokenizer (long prompt), encoded as-is (non-UTF-8 bytes surrogate-escaped)
    for sid in ("ok", "cmyk", "rgba", "png16", "huge", "mask_all_zero", "mask_all_one", "long_prompt",
                "non_utf8_prompt"):
        assert recs[sid]["status"] == "ok", (sid, recs[sid].get("error"))
        with Image.open(out.run_dir / recs[sid]["image"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert "not valid UTF-8" in recs["non_utf8_prompt"]["warnings"][0]
    assert recs["mask_all_one"]["metrics"]["bg_psnr"] is None  # nothing outside the mask: NaN, not 0 or inf
    assert recs["mask_all_zero"]["metrics"]["bg_psnr"] is not None


class OOMMethod(EditMethod):
    name = "oom"
    taxonomy = Taxonomy(LearningStrategy.TRAINING_FREE, (Condition.PROMPT_PAIR,))

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        if sample.id == "good0":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return EditOutput(image=sample.source_image)


def test_out_of_memory_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    cfg = compose_cfg(toy_overrides(data, tmp_path / "res", "method=sdedit", "metrics=none"))
    cfg.method = {"_target_": "test_reliability.OOMMethod", "name": "oom"}
    recs = _records(run(cfg, show_table=False).run_dir)
    assert recs["good0"]["status"] == "error" and recs["good0"]["error"].startswith("out of memory")
    assert recs["good1"]["status"] == "ok"


def test_launcher_configs_compose() -> None:
    for launcher, key in (("local_parallel", "n_jobs"), ("slurm", "timeout_min")):
        cfg = compose_cfg([f"hydra/launcher={launcher}"], return_hydra_config=True)
        assert key in cfg.hydra.launcher
