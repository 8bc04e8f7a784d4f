"""Every column says what computed it: model tags in names, FID/KID naming and subset size, PIE-Bench's quirks
independent of the installed libraries, and what a run records (versions, weight hashes, resolution, the
source clusters, the scoring input)."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, toy_overrides, write_folder_dataset
from PIL import Image
from test_metrics_layer import _batch, _images
from torchvision.transforms.functional import InterpolationMode, resize

from editlab.bench.runner import as_scored, run, scoring_input
from editlab.metrics.base import EditBatch, model_tag
from editlab.metrics.clip_score import CLIPEditedRegion, CLIPScoreMetric
from editlab.metrics.distribution import DistributionMetric
from editlab.metrics.pie import PIECLIPEdited, PIEStructure

pytest_plugins = ["test_metrics"]  # the tiny_clip fixture


@pytest.mark.parametrize(("model", "tag"), [
    ("weights/shapesworld/clip", "sw-clip"), ("openai/clip-vit-large-patch14", "vit-l14"),
    ("torchhub:dino_vitb8", "dino_vitb8"), ("/data/models/my-clip/", "my-clip"),
])
def test_model_tags(model: str, tag: str) -> None:
    assert model_tag(model) == tag


def test_clip_columns_carry_their_model(tiny_clip: Path) -> None:
    assert CLIPScoreMetric().name == "clip_score[sw-clip]"
    assert CLIPScoreMetric(model=str(tiny_clip)).name == f"clip_score[{tiny_clip.name}]"
    assert CLIPScoreMetric().weight_files() and all(f.suffix == ".safetensors"
                                                   for f in CLIPScoreMetric().weight_files())


def test_fid_kid_names_and_kid_subset_size(tiny_clip: Path) -> None:
    fid = DistributionMetric(kind="fid", feature=str(tiny_clip))
    kid = DistributionMetric(kind="kid", feature=str(tiny_clip), reference="source")
    own = DistributionMetric(kind="kid", feature=str(tiny_clip), kid_subset_size=6)
    assert fid.name == f"fid[{tiny_clip.name},bicubic-aa,vs-target]"
    assert kid.name == f"kid[{tiny_clip.name},bicubic-aa,vs-source]"
    assert own.name == f"kid[{tiny_clip.name},bicubic-aa,vs-target,subset=6]"
    real, fake = _images(10, seed=5), _images(10, seed=6)
    batch = EditBatch(edited=fake, source=real, source_prompts=[], target_prompts=[], target=real)
    for m in (kid, own):
        m.update(batch)
    assert kid.compute()["subset_size"] == 10  # min(N, 1000)
    assert own.compute()["subset_size"] == 6
    too_big = DistributionMetric(kind="kid", feature=str(tiny_clip), kid_subset_size=50)
    too_big.update(batch)
    out = too_big.compute()
    assert math.isnan(out["value"]) and "exceeds the 10 images" in out["error"]


def test_pie_edited_clip_scores_an_empty_annotation_as_pie_does(tiny_clip: Path) -> None:
    batch = _batch(2)
    batch.mask[0] = 0  # nothing annotated: PIE's mask_decode still sets the border, so PIE scores it
    pie = PIECLIPEdited(model=str(tiny_clip)).per_sample(batch)
    clean = CLIPEditedRegion(model=str(tiny_clip)).per_sample(batch)
    assert torch.isfinite(pie).all() and math.isnan(clean[0].item()) and math.isfinite(clean[1].item())
    assert PIECLIPEdited(model=str(tiny_clip)).name == f"pie_clip_edited[{tiny_clip.name}]"


def test_pie_structure_resizes_without_antialiasing(tiny_clip: Path) -> None:
    metric = PIEStructure(backbone=str(tiny_clip))
    images = _images(2, seed=9)
    big = torch.nn.functional.interpolate(images, size=(96, 96), mode="nearest")  # larger than the input size
    size = metric.extractor.image_size
    expected = resize(big * 255.0, [size], interpolation=InterpolationMode.BILINEAR, antialias=False)
    expected = (expected - metric.mean) / metric.std
    torch.testing.assert_close(metric.preprocess(big), expected)
    aa = resize(big * 255.0, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    assert not torch.allclose((aa - metric.mean) / metric.std, expected)
    assert metric.version == "2"


def test_scoring_input_jpeg() -> None:
    assert scoring_input({}) == {"jpeg_quality": None}
    assert scoring_input({"_input_": {"jpeg_quality": 75}}) == {"jpeg_quality": 75}
    with pytest.raises(ValueError, match="unknown metrics._input_ keys"):
        scoring_input({"_input_": {"quality": 75}})
    img = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    assert as_scored(img, None) is img
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)  # PIL's default quality, as PIE-Bench's scripts saved edits
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    np.testing.assert_array_equal(np.asarray(as_scored(img, 75)), ref)


def test_a_run_records_versions_weights_resolution_clusters_and_scoring(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    overrides = toy_overrides(data, tmp_path / "res", "method=sdedit", "metrics=default",
                              "~metrics.lpips", "~metrics.bg_lpips", "~metrics.fid", "~metrics.kid")
    first = run(compose_cfg(overrides), show_table=False)
    res = first.results
    assert {"torch", "diffusers", "transformers", "torchmetrics", "lpips"} <= set(res["versions"])
    assert res["resolution"] == 64 and res["metrics_input"] == {"jpeg_quality": None}
    clip = res["metric_definitions"]["clip_score[sw-clip]"]
    (label, digest), = [(k, v) for k, v in clip["weights"].items() if k.endswith("model.safetensors")]
    assert digest == hashlib.sha256((Path(__file__).parent.parent / label).read_bytes()).hexdigest()
    assert json.loads((first.run_dir / "backbone.json").read_text())["weights"] == {}  # toy: built in code
    recs = [json.loads(line) for line in (first.run_dir / "samples.jsonl").read_text().splitlines()]
    assert all(r["source_key"] for r in recs)
    # the same edits scored as JPEG q75: a rerun re-scores (the scoring input is part of the metric key)
    jpeg = run(compose_cfg([*overrides, "+metrics._input_={jpeg_quality: 75}"]), show_table=False)
    assert jpeg.run_dir == first.run_dir and jpeg.edited == 0
    assert jpeg.results["metrics_input"] == {"jpeg_quality": 75}
    assert jpeg.results["metrics"]["bg_psnr"]["mean"] != res["metrics"]["bg_psnr"]["mean"]
