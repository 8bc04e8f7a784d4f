"""Tests for the ShapesWorld CLIP trainer and, when present, the shipped CLIP model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

world = pytest.importorskip("editlab.datasets.shapesworld.world")

from editlab.train import clip as clip_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "shapesworld" / "clip"
TOY = [
    "--batch-size", "8", "--threads", "1", "--device", "cpu", "--no-progress", "--vision-width", "32",
    "--vision-layers", "1", "--text-width", "32", "--text-layers", "1", "--heads", "2", "--proj", "16",
    "--discover-scenes", "200", "--eval-every", "0", "--log-every", "1", "--eval-scenes", "64", "--warmup", "2",
]  # fmt: skip


def test_word_tokenizer_one_token_per_word(tmp_path: Path) -> None:
    tok = clip_train.build_word_tokenizer(world.vocabulary(), tmp_path)
    split = [w for w in world.vocabulary() if len(tok.tokenize(w)) != 1]
    assert split == []
    assert len(tok("a red circle at top left")["input_ids"]) == 2 + 6
    assert tok.tokenize("zebra")  # unknown words still tokenize, character by character


def test_variants_differ_in_one_attribute() -> None:
    rng = np.random.default_rng(0)
    space = clip_train.AttributeSpace.discover(world, rng, 300)
    assert {"color", "shape"} <= set(space.obj_attrs)
    assert "background" in space.scene_attrs
    scene = world.sample_scene(rng, n_objects=2)
    for name in space.obj_attrs:
        for v in space.variants(world, scene, "object", name, 0):
            assert v.objects[1] == scene.objects[1]
            before = clip_train.record_fields(scene.objects[0])
            changed = {k for k, x in clip_train.record_fields(v.objects[0]).items() if x != before[k]}
            assert name in changed
            assert world.fits(v.objects, v.objects[0], 0)
    caps = [world.caption(v) for v in space.variants(world, scene, "object", "color", 0)]
    assert len(caps) == len(set(caps)) == len(world.COLORS) - 1
    assert world.caption(scene) not in caps


def test_attribute_probe_targets() -> None:
    space = clip_train.AttributeSpace.discover(world, np.random.default_rng(0), 300)
    probe = clip_train.AttributeProbe(space, dim=8)
    obj = world.Obj("circle", "red", "large", 2, 0)
    scene = world.Scene((obj,), "gray")
    t = probe.targets([scene])[0]
    per_slot = 1 + len(probe.obj_heads)
    occupied = probe.slots.index((2, 0))
    assert t[occupied * per_slot] == 1 and int((t[::per_slot][: len(probe.slots)] == 1).sum()) == 1
    color = t[occupied * per_slot + 1 + probe.obj_heads.index("color")]
    assert space.obj_values["color"][color] == "red"
    loss, acc = probe.loss(torch.zeros(1, 8), probe.targets([scene]))
    assert torch.isfinite(loss) and 0.0 <= float(acc) <= 1.0


def test_contrastive_loss_duplicates_and_perfect_match() -> None:
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    targets = torch.tensor([0, 1, 2, 3])
    loss, _, _, acc = clip_train.contrastive_loss(emb, emb, targets, torch.tensor(100.0))
    assert acc == 1.0 and loss < 0.1
    dup = torch.tensor([0, 0, 1, 2])  # images 0 and 1 share a caption
    img = torch.stack([emb[0], emb[0], emb[1], emb[2]])
    loss, _, l_t2i, acc = clip_train.contrastive_loss(img, emb[:3], dup, torch.tensor(100.0))
    assert acc == 1.0 and l_t2i < 0.8  # log 2 is the floor for a caption with two identical images


def test_toy_run_resume_and_export(tmp_path: Path) -> None:
    out, export = tmp_path / "run", tmp_path / "export"
    s1 = clip_train.main(["--out", str(out), "--steps", "2", *TOY])
    assert s1["steps"] == 2 and (out / clip_train.CHECKPOINT).exists()
    s2 = clip_train.main(["--out", str(out), "--steps", "3", "--export", str(export), *TOY])
    assert s2["steps"] == 3
    assert torch.load(out / clip_train.CHECKPOINT, weights_only=False)["step"] == 3
    with (out / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]
    assert 0.0 <= s2["eval"]["attribute_mean"] <= 1.0 and "color" in s2["eval"]["attributes"]

    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    model = CLIPModel.from_pretrained(export).eval()
    proc = CLIPProcessor.from_pretrained(export)
    assert isinstance(proc.tokenizer, CLIPTokenizer) and isinstance(proc.image_processor, CLIPImageProcessor)
    rng = np.random.default_rng(1)
    scenes = [world.sample_scene(rng) for _ in range(3)]
    images = [world.render(s) for s in scenes]
    inputs = proc(text=[world.caption(s) for s in scenes], images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert img.shape == (3, 16) and txt.pooler_output.shape == (3, 16)
    meta = json.loads((export / "training.json").read_text())
    ref = clip_train.to_pixels(np.stack(images), meta["image_mean"], meta["image_std"], torch.device("cpu"))
    assert torch.allclose(inputs["pixel_values"], ref, atol=1e-5)  # processor matches training preprocessing
    assert (export / "train_log.csv").exists() and (export / "model.safetensors").exists()


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").exists(), reason="no shipped CLIP model")
def test_shipped_model_prefers_true_colour() -> None:
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(SHIPPED).eval()
    proc = CLIPProcessor.from_pretrained(SHIPPED)
    assert sum(f.stat().st_size for f in SHIPPED.glob("*.safetensors")) < 10 * 2**20
    rng = np.random.default_rng(2024)
    space = clip_train.AttributeSpace.discover(world, rng, 300)
    wins, total = 0, 0
    for _ in range(32):
        scene = world.sample_scene(rng)
        wrong = space.variants(world, scene, "object", "color", 0, rng=rng, limit=1)[0]
        caps = [world.caption(scene), world.caption(wrong)]
        inputs = proc(text=caps, images=[world.render(scene)], return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**inputs).logits_per_image[0]
        wins += int(logits[0] > logits[1])
        total += 1
    assert wins >= 30, f"true caption ranked first on {wins}/{total} renders"
