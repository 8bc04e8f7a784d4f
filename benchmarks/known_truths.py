"""Known truths of Plug-and-Play and MasaCtrl, measured on the ShapesWorld test split with the shipped backbone.

    python benchmarks/known_truths.py [--per-task 20] [--steps 20] [--truth pnp|masactrl|both]

* Plug-and-Play keeps the structure on stylistic edits (colour, texture, style): its structure distance
  (``structure_dist[clip]``, ShapesWorld CLIP keys) is lower than the prompt swap's (editor ``swap``), both
  after DDIM inversion, on the same samples;
* MasaCtrl keeps the object's colour and texture on pose and viewpoint edits better than the prompt swap: the
  oracle reads the edited object with the source's colour and texture.

Prints per-method means of each score (also the oracle's edit accuracy and preservation, and MasaCtrl with the
earlier ``source_prompt=source``), the paired differences to the swap (mean, paired-bootstrap 95% CI) and the
Wilcoxon signed-rank p-value; ``tests/test_faithful_a_shapesworld.py`` asserts what holds on a bounded subset.
Figures are of the ShapesWorld models, not of Stable Diffusion.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STYLISTIC = ["color_change", "texture_change", "style_change"]
POSE_VIEW = ["pose_action", "viewpoint"]


def samples(task_types: list[str], per_task: int) -> list:
    from editlab.datasets.shapesworld import ShapesWorldDataset

    dataset = ShapesWorldDataset(split="test", task_types=task_types, per_task=per_task)
    return [dataset.load(i) for i in dataset.ids()]


def edits(backbone, editor, items: list) -> list:
    from editlab.methods.inversion_editing import InversionEditing

    method = InversionEditing("ddim", editor)
    method.setup(backbone)
    return [method.edit(s, torch.Generator().manual_seed(i)).image for i, s in enumerate(items)]


def structure_distance(images: list, items: list) -> np.ndarray:
    from editlab.metrics.base import EditBatch, pil_to_unit
    from editlab.metrics.structure import StructureDistance

    metric = StructureDistance(backbone=str(ROOT / "weights/shapesworld/clip"))
    batch = EditBatch(edited=torch.stack([pil_to_unit(e) for e in images]),
                      source=torch.stack([pil_to_unit(s.source_image) for s in items]),
                      source_prompts=[s.source_prompt for s in items], target_prompts=[s.target_prompt for s in items],
                      mask=None, meta=[s.meta for s in items])
    return metric.per_sample(batch).numpy()


def colour_texture_kept(images: list, items: list) -> np.ndarray:
    """Per sample: share of {colour, texture} of the edited object the oracle reads as the target scene's."""
    from editlab.datasets.shapesworld import oracle
    from editlab.datasets.shapesworld.world import Scene

    out = []
    for image, sample in zip(images, items):
        m = sample.meta.get("shapesworld", sample.meta)
        obj = Scene.from_dict(m["target"]).objects[m["edited_index"]]
        det = oracle.analyse(np.asarray(image.convert("RGB"))).at(obj.x, obj.y)
        out.append(0.0 if det is None else np.mean([det.color == obj.color, det.texture == obj.texture]))
    return np.asarray(out, dtype=float)


def oracle_score(name: str):
    """The ShapesWorld oracle's ``edit_accuracy`` or ``preservation`` per sample."""
    from editlab.datasets.shapesworld import oracle

    fn = getattr(oracle, name)
    return lambda images, items: np.asarray([fn(np.asarray(i.convert("RGB")), s.meta) for i, s in zip(images, items)])


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict:
    """Mean of a - b, its paired-bootstrap 95% CI and the Wilcoxon signed-rank p-value."""
    from scipy.stats import wilcoxon

    d = a - b
    rng = np.random.default_rng(seed)
    boots = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
    p = float(wilcoxon(a, b).pvalue) if np.any(d != 0) else 1.0
    return {"mean_diff": round(float(d.mean()), 5),
            "ci95": (round(float(np.percentile(boots, 2.5)), 5), round(float(np.percentile(boots, 97.5)), 5)),
            "wilcoxon_p": round(p, 4), "n": len(d)}


TRUTHS = {
    # truth: (task types, {label: editor spec}, {score name: scorer})
    "pnp": (STYLISTIC, {"pnp": "pnp"},
            {"structure_dist": structure_distance, "edit_acc": oracle_score("edit_accuracy")}),
    "masactrl": (POSE_VIEW, {"masactrl": "masactrl",
                             "masactrl[source_prompt=source]": {"name": "masactrl", "source_prompt": "source"}},
                 {"colour_texture_kept": colour_texture_kept, "preservation": oracle_score("preservation"),
                  "edit_acc": oracle_score("edit_accuracy")}),
}


def compare(backbone, truth: str, per_task: int, steps: int) -> dict:
    """Score the truth's editors and the prompt swap on the same samples and seeds; print and return the figures."""
    task_types, editors, scores = TRUTHS[truth]
    items = samples(task_types, per_task)
    images = {"swap": edits(backbone, "swap", items)} | {k: edits(backbone, v, items) for k, v in editors.items()}
    result = {}
    for name, score in scores.items():
        values = {label: score(imgs, items) for label, imgs in images.items()}
        result[name] = {label: round(float(v.mean()), 5) for label, v in values.items()}
        result[name] |= {f"{label} - swap": paired(values[label], values["swap"]) for label in editors}
        print(f"{', '.join(task_types)} (n={len(items)}, {steps} steps) {name}: {result[name]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-task", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--truth", choices=[*TRUTHS, "both"], default="both")
    args = parser.parse_args()
    from editlab.models.backbone import load_backbone

    backbone = load_backbone(str(ROOT / "weights/shapesworld/sd"), device="cpu", num_inference_steps=args.steps)
    start = time.perf_counter()
    for truth in TRUTHS if args.truth == "both" else [args.truth]:
        compare(backbone, truth, args.per_task, args.steps)
    print(f"wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
