"""Cost of editlab's metric set against the reference implementations called directly, per image.

    python benchmarks/metrics_cost.py --n 128 [--clip weights/shapesworld/clip] [--size 64]

Scores N random (edited, source, mask) triplets with editlab's batched metrics and with torchmetrics / lpips
called one image at a time (the way evaluation scripts usually loop), and prints images/s for both and the
ratio. With ``--results DIR`` it also prints the share of a stored run's wall time spent on metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from editlab.metrics.base import EditBatch, MetricUnavailable
from editlab.metrics.masked import BackgroundMSE, BackgroundPSNR, BackgroundSSIM


def _data(n: int, size: int) -> EditBatch:
    g = torch.Generator().manual_seed(0)
    src = torch.rand(n, 3, size, size, generator=g)
    edited = (src + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return EditBatch(edited=edited, source=src, source_prompts=["a red circle"] * n,
                     target_prompts=["a blue circle"] * n, mask=mask)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clip", default="weights/shapesworld/clip")
    parser.add_argument("--results", default=None, help="a results folder: report the metrics share of wall time")
    args = parser.parse_args()
    data = _data(args.n, args.size)
    metrics = [BackgroundPSNR(), BackgroundMSE(), BackgroundSSIM()]
    try:
        from editlab.metrics.clip_score import CLIPScoreMetric

        metrics.append(CLIPScoreMetric(model=args.clip))
    except MetricUnavailable as err:
        print(f"clip_score skipped: {err}")

    def ours() -> None:
        for start in range(0, args.n, args.batch):
            sl = slice(start, start + args.batch)
            b = EditBatch(edited=data.edited[sl], source=data.source[sl], source_prompts=data.source_prompts[sl],
                          target_prompts=data.target_prompts[sl], mask=data.mask[sl])
            for m in metrics:
                m.update(b)
        [m.compute() for m in metrics]

    def reference() -> None:
        for i in range(args.n):
            keep = (data.mask[i, 0] == 0)
            e, s = data.edited[i][:, keep], data.source[i][:, keep]
            float(peak_signal_noise_ratio(e, s, data_range=1.0))
            float(((e - s) ** 2).mean())
            float(structural_similarity_index_measure(data.edited[i:i + 1], data.source[i:i + 1], data_range=1.0))
            if len(metrics) > 3:
                clip = metrics[3]
                float((clip.image_embeds(data.edited[i:i + 1]) * clip.text_embeds(data.target_prompts[i:i + 1])).sum())

    ours()  # warm-up
    t_ours, t_ref = _time(ours), _time(reference)
    print(f"{args.n} images of {args.size}px, metrics: {', '.join(m.name for m in metrics)}")
    print(f"editlab (batched):          {args.n / t_ours:8.1f} images/s")
    print(f"reference (per image loop): {args.n / t_ref:8.1f} images/s")
    print(f"speed ratio editlab/reference: {t_ref / t_ours:.2f}x")
    if args.results:
        edit = metric = 0.0
        for res in Path(args.results).rglob("results.json"):
            timing = json.loads(res.read_text()).get("timing", {})
            edit += timing.get("edit_s_total", 0.0)
            metric += timing.get("metrics_s_this_run", 0.0)
        if edit + metric > 0:
            print(f"metrics share of wall time in {args.results}: {100 * metric / (edit + metric):.1f}% "
                  f"(edits {edit:.1f} s, metrics {metric:.1f} s)")


if __name__ == "__main__":
    main()
