"""ShapesWorld: generator determinism, exact masks, vocabulary coverage, oracle accuracy, dataset API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from editlab.datasets.shapesworld import (
    ShapesWorldDataset,
    analyse,
    attribute_accuracy,
    caption,
    edit_accuracy,
    make_edit,
    object_mask,
    preservation,
    render,
    sample_scene,
    scene_accuracy,
    train_batch,
    train_edit_batch,
    vocabulary,
)
from editlab.datasets.shapesworld.world import Scene
from editlab.types import SampleError, TaskType

TASKS = list(TaskType)


def _tokens(text: str) -> set[str]:
    return set(text.split())


def test_render_deterministic_and_shapes() -> None:
    a = [render(sample_scene(np.random.default_rng(3))) for _ in range(2)]
    assert a[0].tobytes() == a[1].tobytes()
    assert a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8
    scene = sample_scene(np.random.default_rng(4), 3)
    big = render(scene, 128)
    assert big.shape == (128, 128, 3)
    imgs, caps = train_batch(np.random.default_rng(0), 4)
    imgs2, caps2 = train_batch(np.random.default_rng(0), 4)
    assert imgs.shape == (4, 64, 64, 3) and caps == caps2 and np.array_equal(imgs, imgs2)


def test_scene_roundtrip_and_masks_disjoint() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        scene = sample_scene(rng)
        assert 1 <= len(scene.objects) <= 3
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
        masks = [object_mask(scene, i) for i in range(len(scene.objects))]
        assert all(m.any() for m in masks)
        total = np.sum(masks, axis=0)
        assert total.max() <= 1, "objects overlap"


def test_captions_use_vocabulary_and_are_short() -> None:
    vocab = set(vocabulary())
    assert all(w == w.lower() and w.isalpha() for w in vocab)
    rng = np.random.default_rng(11)
    for _ in range(200):
        text = caption(sample_scene(rng))
        assert _tokens(text) <= vocab, _tokens(text) - vocab
        assert len(text.split()) < 40


@pytest.mark.parametrize("task", TASKS, ids=[t.value for t in TASKS])
def test_edit_exact_mask_and_oracle(task: TaskType) -> None:
    rng = np.random.default_rng(100 + TASKS.index(task))
    vocab = set(vocabulary())
    src_hits = 0
    for _ in range(6):
        e = make_edit(rng, task)
        assert e.task_type is task
        assert e.mask.dtype == bool and e.mask.any()
        assert np.array_equal(e.source_image[~e.mask], e.target_image[~e.mask])
        assert not np.array_equal(e.source_image, e.target_image)
        for scene in (e.source, e.target):
            if scene.objects:
                assert np.sum([object_mask(scene, i) for i in range(len(scene.objects))], axis=0).max() <= 1
        for text in (e.instruction, e.source_prompt, e.target_prompt):
            assert _tokens(text) <= vocab, (text, _tokens(text) - vocab)
        meta = json.loads(json.dumps(e.meta()))
        assert edit_accuracy(e.target_image, meta) == 1.0, e.instruction
        assert preservation(e.target_image, meta) == 1.0, e.instruction
        src_hits += edit_accuracy(e.source_image, meta)
    assert src_hits == 0


def test_edits_deterministic() -> None:
    a = make_edit(np.random.default_rng(5), TaskType.COLOR_CHANGE)
    b = make_edit(np.random.default_rng(5), TaskType.COLOR_CHANGE)
    assert a.instruction == b.instruction and np.array_equal(a.target_image, b.target_image)
    batch = train_edit_batch(np.random.default_rng(1), 8)
    assert len(batch) == 8


def test_oracle_accuracy_on_clean_renders() -> None:
    rng = np.random.default_rng(2024)
    scores: dict[str, list[float]] = {}
    for _ in range(200):
        scene = sample_scene(rng)
        for k, v in attribute_accuracy(render(scene), scene).items():
            scores.setdefault(k, []).append(v)
    acc = {k: float(np.mean(v)) for k, v in scores.items()}
    overall = float(np.mean(list(acc.values())))
    print(f"oracle clean accuracy {overall:.4f}", {k: round(v, 3) for k, v in acc.items()})
    assert min(acc.values()) >= 0.99


def test_oracle_robust_to_noise_and_blur() -> None:
    rng = np.random.default_rng(99)
    noisy, blurred = [], []
    for _ in range(60):
        scene = sample_scene(rng)
        img = render(scene).astype(np.float32)
        n = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        b = np.clip(ndimage.gaussian_filter(img, (0.7, 0.7, 0)), 0, 255).astype(np.uint8)
        noisy.append(np.mean(list(attribute_accuracy(n, scene).values())))
        blurred.append(np.mean(list(attribute_accuracy(b, scene).values())))
    print(f"oracle accuracy noise(8/255)={np.mean(noisy):.3f} blur(0.7px)={np.mean(blurred):.3f}")
    assert np.mean(noisy) >= 0.97
    assert np.mean(blurred) >= 0.95


def test_scene_accuracy_and_analyse() -> None:
    scene = sample_scene(np.random.default_rng(8), 2)
    img = render(scene)
    assert scene_accuracy(img, scene) == {"background": True, "colors": True, "shapes": True, "count": True}
    reading = analyse(img)
    assert reading.background == scene.background and len(reading.objects) == 2
    other = Scene(scene.objects[:1], scene.background, scene.style)
    assert scene_accuracy(render(other), scene)["count"] is False


def test_dataset_ids_filters_and_load() -> None:
    ds = ShapesWorldDataset(per_task=3)
    ids = ds.ids()
    assert len(ids) == 3 * len(TASKS) and ids[0] == "object_addition-0000"
    assert len(ShapesWorldDataset(per_task=3, limit=5)) == 5
    only = ShapesWorldDataset(per_task=3, task_types=["color_change", TaskType.VIEWPOINT])
    assert only.ids() == [f"color_change-{i:04d}" for i in range(3)] + [f"viewpoint-{i:04d}" for i in range(3)]
    s = ds.load("color_change-0002")
    assert s.task_type is TaskType.COLOR_CHANGE and s.source_image.mode == "RGB" and s.mask.mode == "L"
    assert s.target_image.size == (64, 64) and s.instruction and s.source_prompt and s.target_prompt
    assert edit_accuracy(np.asarray(s.target_image), s.meta) == 1.0
    again = ShapesWorldDataset(per_task=3).load("color_change-0002")
    assert again.source_image.tobytes() == s.source_image.tobytes() and again.instruction == s.instruction
    mv = ds.load("object_movement-0000")
    assert mv.points is not None and len(mv.points) == 2 and mv.points[0] != mv.points[1]
    rep = ds.load("object_replacement-0001")
    assert rep.reference_image is not None and rep.reference_image.size == (64, 64)
    assert ShapesWorldDataset(per_task=1, size=96).load("style_change-0000").source_image.size == (96, 96)


def test_dataset_splits_disjoint_and_errors() -> None:
    test = ShapesWorldDataset("test", per_task=4, task_types=["object_removal"])
    train = ShapesWorldDataset("train", per_task=4, task_types=["object_removal"])
    a = {test.load(i).source_image.tobytes() for i in test.ids()}
    b = {train.load(i).source_image.tobytes() for i in train.ids()}
    assert a.isdisjoint(b)
    with pytest.raises(ValueError, match="test"):
        ShapesWorldDataset("validation")
    for bad in ("color_change-0004", "nonsense-0001", "color_change-x", "color_change-1"):
        with pytest.raises(SampleError, match=bad):
            test.load(bad)
