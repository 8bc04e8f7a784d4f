"""Time K edits of one source image with and without the inversion cache, and one source inverted for the four
inversions that share the DDIM trajectory.

Without the cache every edit inverts the source again; with it the first edit inverts and the other K - 1
reuse the stored inversion (in memory here; across runs it is read from ``results/_cache/inversions``).
Prints seconds per setting and the ratio (time without / time with the cache). Then inverts one source for DDIM,
Negative-prompt, Direct and Null-text inversion, each in its own method sharing one cache folder (as grid points
of a run do) and without a cache, and prints the UNet calls and seconds of each::

    python benchmarks/inversion_cache.py                       # toy backbone, K=8, 10 steps
    python benchmarks/inversion_cache.py --backbone weights/shapesworld/sd --steps 50
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from editlab.methods.common import encode_prompt
from editlab.methods.inversion_editing import InversionEditing
from editlab.models.backbone import load_backbone, toy_backbone
from editlab.types import Sample

TARGETS = ["a blue square", "a green square", "a yellow square", "a purple square", "a red circle",
           "a red triangle", "a red star", "a orange square", "a white square", "a black square"]


def source_image(size: int) -> Image.Image:
    arr = np.zeros((size, size, 3), np.uint8)
    arr[:] = (40, 160, 40)
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = (220, 30, 30)
    return Image.fromarray(arr)


def time_edits(backbone, inversion: dict, editor: str, k: int, cache: bool) -> float:
    method = InversionEditing(inversion, editor, cache=cache)
    method.setup(backbone)  # in-memory cache: the same reuse a run gets from disk, minus a file read
    image = source_image(backbone.resolution)
    start = time.perf_counter()
    for i in range(k):
        sample = Sample(id=f"s{i}", source_image=image, source_prompt="a red square", target_prompt=TARGETS[i % 10])
        method.edit(sample, torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def shared_trajectory(backbone, nti_inner_steps: int) -> None:
    """One source inverted for ddim, npi, direct and nti: with one shared cache folder, then without a cache."""
    calls = [0]
    handle = backbone.unet.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    sample = Sample(id="s0", source_image=source_image(backbone.resolution), source_prompt="a red square",
                    target_prompt="a blue square")
    embeds = encode_prompt(backbone, [sample.source_prompt])
    inversions = ["ddim", "npi", "direct", {"name": "nti", "num_inner_steps": nti_inner_steps}]
    print(f"\none source, four inversions (nti with {nti_inner_steps} inner steps): UNet calls / seconds")
    try:
        with tempfile.TemporaryDirectory() as cache_dir:
            for label, cache in (("shared cache", True), ("no cache", False)):
                total_calls, total_s, row = 0, 0.0, []
                for spec in inversions:
                    method = InversionEditing(spec, "p2p", cache=cache)
                    method.setup(backbone, cache_dir=cache_dir if cache else None)
                    calls[0], start = 0, time.perf_counter()
                    method.invert(sample, embeds, torch.Generator().manual_seed(0))
                    seconds = time.perf_counter() - start
                    total_calls, total_s = total_calls + calls[0], total_s + seconds
                    row.append(f"{method.inversion.name} {calls[0]} / {seconds:.2f}")
                print(f"{label:<13} {', '.join(row)}; total {total_calls} / {total_s:.2f}")
    finally:
        handle.remove()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="toy", help="'toy' or a diffusers folder / hub id")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--k", type=int, default=8, help="edits (target prompts) of the one source")
    p.add_argument("--inversions", default="ddim,nti", help="comma-separated inversion names")
    p.add_argument("--editor", default="p2p")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nti-inner-steps", type=int, default=3, help="Null-text inner steps in the shared-trajectory part")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.backbone == "toy":
        backbone = toy_backbone(num_inference_steps=args.steps, device="cpu")
    else:
        backbone = load_backbone(args.backbone, num_inference_steps=args.steps, device="cpu")
    print(f"backbone {backbone.name}, {args.steps} steps, editor {args.editor}, K={args.k} edits of one source")
    print(f"{'inversion':<10} {'without cache s':>16} {'with cache s':>13} {'ratio':>7}")
    for name in args.inversions.split(","):
        without = time_edits(backbone, {"name": name}, args.editor, args.k, cache=False)
        with_cache = time_edits(backbone, {"name": name}, args.editor, args.k, cache=True)
        print(f"{name:<10} {without:>16.2f} {with_cache:>13.2f} {without / with_cache:>7.2f}")
    shared_trajectory(backbone, args.nti_inner_steps)


if __name__ == "__main__":
    main()
