"""A judge's agreement with the exact truth on ShapesWorld, on edits whose quality is known.

For each ShapesWorld test sample, three candidate edits are judged with editlab's protocol
(``configs/metrics/judge/editlab.yaml``): the ground-truth target (the edit done right), the unchanged source
(nothing done) and another sample's target (the wrong picture). The oracle scores every candidate (``edit_acc``,
``preservation``); the script prints each judge column's Spearman, Kendall and pairwise accuracy against them, and
the judge's failure rate. By default the judge is editlab's tiny random Qwen2-VL under ``transformers serve``
(agreement at chance is the expected, honest result); ``--base-url/--model`` measure a real judge.

    python benchmarks/judge_agreement.py --per-task 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from editlab import ROOT
from editlab.datasets.shapesworld import ShapesWorldDataset
from editlab.metrics.base import EditBatch, pil_to_unit
from editlab.metrics.judge import JudgeMetric
from editlab.metrics.world import EditAccuracy, Preservation
from editlab.reports.judges import agreement


def candidates(per_task: int) -> tuple[EditBatch, list[str]]:
    data = ShapesWorldDataset(split="test", per_task=per_task)
    samples = [data.load(i) for i in data.ids()]
    edited, source, meta, instr, tasks, kinds = [], [], [], [], [], []
    for k, s in enumerate(samples):
        other = samples[(k + 1) % len(samples)].target_image
        for kind, image in (("target", s.target_image), ("source", s.source_image), ("other", other)):
            edited.append(pil_to_unit(image))
            source.append(pil_to_unit(s.source_image))
            meta.append(s.meta)
            instr.append(s.instruction)
            tasks.append(s.task_type.value if s.task_type else None)
            kinds.append(kind)
    n = len(edited)
    batch = EditBatch(edited=torch.stack(edited), source=torch.stack(source), source_prompts=[None] * n,
                      target_prompts=[None] * n, meta=meta, instructions=instr, task_types=tasks,
                      source_images=[s.source_image for s in samples for _ in range(3)])
    return batch, kinds


def measure(base_url: str, model: str, per_task: int, temperature: float, max_tokens: int, cache: Path,
            seed: int | None = 0) -> None:
    batch, kinds = candidates(per_task)
    truth = {"edit_acc": EditAccuracy().per_sample(batch).numpy(),
             "preservation": Preservation().per_sample(batch).numpy()}
    node = OmegaConf.load(ROOT / "configs" / "metrics" / "judge" / "editlab.yaml")["editlab_judge"]
    judge = JudgeMetric(protocol=OmegaConf.to_container(node["protocol"], resolve=True),
                        client={"base_url": base_url, "model": model, "concurrency": 4},
                        decoding={"temperature": temperature, "seed": seed, "max_tokens": max_tokens},
                        parse_retries=2, cache_dir=str(cache))
    start = time.perf_counter()
    results = judge.score_samples(batch)
    seconds = time.perf_counter() - start
    print(f"{len(results)} candidate edits ({len(results) // 3} samples x target / source / other), judged in "
          f"{seconds:.0f} s: {judge.stats['calls']} calls, {judge.stats['parse_failures']} unparseable replies")
    for kind in ("target", "source", "other"):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        print(f"  oracle on {kind:<6}: edit_acc {truth['edit_acc'][sel].mean():.2f}, "
              f"preservation {np.nanmean(truth['preservation'][sel]):.2f}")
    for col in judge.columns():
        values = np.array([np.nan if r.values[col] is None else r.values[col] for r in results], dtype=float)
        failed = int(np.isnan(values).sum())
        scored = values[np.isfinite(values)]
        constant = f"; every score is {scored[0]:g}, so rank correlations are undefined (nan)" \
            if len(scored) and np.ptp(scored) == 0 else ""
        print(f"{col}: {failed}/{len(values)} judge failures ({100 * failed / len(values):.0f}%){constant}")
        for name, t in truth.items():
            a = agreement(values, t)
            print(f"  vs oracle {name:<12}: n={a['n']:<4} Spearman {a['spearman']:+.3f} (p={a['spearman_p']:.2f})  "
                  f"Kendall {a['kendall']:+.3f}  pairwise accuracy {a['pairwise_accuracy']:.3f} "
                  f"over {a['pairs']} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-task", type=int, default=2, help="ShapesWorld test samples per task type (12 types)")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--temperature", type=float, default=None,
                        help="default: 0 for a given server, 1.0 for the toy (its greedy answer never changes)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: 4 (the toy: 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.base_url:
            measure(args.base_url, args.model or "default", args.per_task, args.temperature or 0.0,
                    args.max_tokens or 4, Path(tmp) / "cache")
            return
        from editlab.metrics.judge.local_server import LocalServer
        from editlab.models.toy_vlm import build_toy_vlm

        folder = build_toy_vlm(Path(tmp) / "toy-vlm")
        with LocalServer(folder) as server:
            print(f"judge: editlab's toy Qwen2-VL (random weights) under transformers serve at {server.base_url}")
            # unseeded first asks: with one fixed seed the toy samples the same token for every input
            measure(server.base_url, str(folder), args.per_task,
                    1.0 if args.temperature is None else args.temperature, args.max_tokens or 1, Path(tmp) / "cache",
                    seed=None)


if __name__ == "__main__":
    main()
