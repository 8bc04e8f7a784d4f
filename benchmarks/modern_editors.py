"""Per-edit time of the modern editors, and what diffusers' First-Block-Cache costs in quality.

    python benchmarks/modern_editors.py                       # toy families + the ShapesWorld flow model, CPU
    python benchmarks/modern_editors.py --n 8 --threads 1 --json figures.json
    python benchmarks/modern_editors.py --pairs flux:flowedit,flux_kontext:instruct --device cuda --dtype bfloat16

For each ``backbone:method`` pair (backbone and method config names) it edits ``--n`` ShapesWorld test samples
after one warm-up edit and prints the mean wall seconds per edit (and peak CUDA memory on a GPU). ``sd3_img2img``
as a method name times the family's image-to-image pipeline (SDEdit's computation, strength 0.5) directly.
For each ``--cache-pairs`` pair it then runs the same samples with ``speed.cache={type: first_block, threshold}``
for every ``--thresholds`` value and prints the PSNR of the cached output against the uncached one on the same
seed, and the time saved. Toy backbones have random weights: their times are code-path costs and their cache PSNRs
say nothing about image quality.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

DEFAULT_PAIRS = ("toy_sd3:flowedit,toy_sd3:rf_inversion,toy_flux:flowedit,toy_flux:rf_inversion,"
                 "toy_flux_kontext:instruct,toy_sdxl_ip2p:instruct,shapesworld_flow:flowedit,"
                 "shapesworld_flow:rf_inversion,shapesworld_flow:sd3_img2img")
DEFAULT_CACHE_PAIRS = "toy_flux:flowedit,toy_flux_kontext:instruct"


def compose(backbone: str, method: str, device: str, dtype: str, speed: dict[str, Any] | None = None) -> tuple:
    """(backbone, method) built from their configs, the way the runner builds them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from editlab import ROOT
    from editlab.bench.runner import build
    from editlab.models.backbone import backbone_from_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"backbone={backbone}", "method=flowedit"])
    bcfg = OmegaConf.to_container(cfg.backbone, resolve=True)
    if speed:
        bcfg["speed"] = {**(bcfg.get("speed") or {}), **speed}
    bb = backbone_from_config(bcfg, device=device, dtype=dtype)
    if method == "sd3_img2img":
        return bb, None
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        mcfg = hydra_compose(config_name="config", overrides=[f"method={method}"]).method
    m = build(mcfg)
    m.setup(bb)
    return bb, m


def samples(n: int, resolution: int) -> list:
    from editlab.bench.runner import prepare_sample
    from editlab.datasets.shapesworld import ShapesWorldDataset

    ds = ShapesWorldDataset()
    ids = ds.ids()[:: max(1, len(ds.ids()) // (n + 1))][: n + 1]
    return [prepare_sample(ds.load(i), resolution) for i in ids]


def edit_all(bb: Any, method: Any, items: list, seed: int = 0) -> tuple[list[np.ndarray], float]:
    """Edit every sample (the first is a warm-up, not timed); (images, mean seconds per timed edit)."""
    from editlab.models.families import build_pipeline, call_kwargs, guidance_kwargs

    pipe = build_pipeline(bb, "img2img") if method is None else None
    out, times = [], []
    for k, s in enumerate(items):
        gen = torch.Generator("cpu").manual_seed(seed + k)
        if bb.device.type == "cuda":
            torch.cuda.synchronize(bb.device)
        t0 = time.perf_counter()
        if pipe is not None:
            image = pipe(prompt=s.target_prompt, image=s.source_image, strength=0.5, generator=gen,
                         num_inference_steps=bb.num_inference_steps, **guidance_kwargs(bb, bb.guidance_scale),
                         **call_kwargs(bb)).images[0]
        else:
            image = method.edit(s, gen).image
        if bb.device.type == "cuda":
            torch.cuda.synchronize(bb.device)
        if k:
            times.append(time.perf_counter() - t0)
        out.append(np.asarray(image, np.float64))
    return out, float(np.mean(times)) if times else float("nan")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated backbone:method pairs")
    p.add_argument("--cache-pairs", default=DEFAULT_CACHE_PAIRS, help="pairs measured with First-Block-Cache")
    p.add_argument("--thresholds", default="0.05,0.1,0.2")
    p.add_argument("--n", type=int, default=4, help="timed edits per pair (plus one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures: dict[str, Any] = {"device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
                               "n": args.n, "per_edit_s": {}, "cache": {}}
    print(f"{'backbone:method':<36} {'s/edit':>8} {'peak MB':>8}")
    for pair in [x for x in args.pairs.split(",") if x]:
        backbone, method = pair.split(":")
        try:
            bb, m = compose(backbone, method, args.device, args.dtype)
        except Exception as err:  # e.g. hub weights not available offline
            print(f"{pair:<36} skipped: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
            continue
        if bb.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(bb.device)
        _, sec = edit_all(bb, m, samples(args.n, bb.resolution))
        peak = torch.cuda.max_memory_allocated(bb.device) / 2**20 if bb.device.type == "cuda" else float("nan")
        figures["per_edit_s"][pair] = {"s_per_edit": sec, "peak_cuda_mb": peak, "steps": bb.num_inference_steps}
        print(f"{pair:<36} {sec:>8.3f} {peak:>8.0f}")
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    if args.cache_pairs:
        print(f"\n{'First-Block-Cache':<36} {'thresh':>6} {'PSNR dB':>8} {'s/edit':>8} {'uncached':>8}")
    for pair in [x for x in args.cache_pairs.split(",") if x]:
        backbone, method = pair.split(":")
        bb, m = compose(backbone, method, args.device, args.dtype)
        items = samples(args.n, bb.resolution)
        ref, sec0 = edit_all(bb, m, items)
        for th in thresholds:
            bbc, mc = compose(backbone, method, args.device, args.dtype, {"cache": {"type": "first_block",
                                                                                  "threshold": th}})
            got, sec = edit_all(bbc, mc, items)
            db = float(np.mean([psnr(a, b) for a, b in zip(ref[1:], got[1:])]))
            figures["cache"].setdefault(pair, {})[str(th)] = {"psnr_db_vs_uncached": db, "s_per_edit": sec,
                                                              "uncached_s_per_edit": sec0}
            print(f"{pair:<36} {th:>6.2f} {db:>8.2f} {sec:>8.3f} {sec0:>8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
