"""Fine-tune the text-to-image UNet into an InstructPix2Pix-style instruction-editing UNet (8 input channels).

Input channels are noisy target latents (4) + the source image's latents (4, the unscaled posterior mode,
as ``StableDiffusionInstructPix2PixPipeline`` computes them); the text is the instruction. Conditioning
dropout follows InstructPix2Pix: 5% text only, 5% image only, 5% both, so the pipeline's two guidance
scales work. Any iterable of (source_image, instruction, target_image) triplets can be the data (editlab
``Sample`` objects, ShapesWorld ``WorldEdit`` objects, or plain tuples); ShapesWorld's ``train_edit_batch``
is the default source.

    python -m editlab.train.ip2p --out runs/ip2p --init weights/shapesworld/sd --minutes 25 \
        --export weights/shapesworld/ip2p
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

from editlab.train import common as C
from editlab.train import sd as S

SETTINGS = {"guidance_scale": 3.0, "image_guidance_scale": 1.5, "num_inference_steps": 50, "resolution": 64}
Triplet = tuple[np.ndarray, str, np.ndarray]


def as_uint8(image: Any, size: int = 64) -> np.ndarray:
    """PIL image or array -> (size, size, 3) uint8."""
    if isinstance(image, Image.Image):
        im = image.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8) if arr.max() <= 1.0 else arr.astype(np.uint8)
    if arr.shape[:2] != (size, size):
        return as_uint8(Image.fromarray(arr[..., :3]), size)
    return arr[..., :3]


def to_triplet(item: Any) -> Triplet:
    """(source uint8, instruction, target uint8) from a Sample/WorldEdit-like object or a 3-tuple."""
    if isinstance(item, tuple):
        src, instr, tgt = item
    else:
        src, instr, tgt = item.source_image, item.instruction, item.target_image
    if tgt is None or instr is None:
        raise ValueError("instruction-editing training needs source_image, instruction and target_image")
    return as_uint8(src), str(instr), as_uint8(tgt)


def cycle_triplets(triplets: Iterable[Any]) -> Iterator[Triplet]:
    """Endless stream over a re-iterable collection of triplets (a one-shot iterator is read once)."""
    while True:
        seen = False
        for item in triplets:
            seen = True
            yield to_triplet(item)
        if not seen:
            raise ValueError("the triplet source is empty (or a one-shot iterator that ran out)")


def world_triplets(rng: np.random.Generator) -> Iterator[Triplet]:
    """Endless ShapesWorld edit triplets of uniformly random task types."""
    from editlab.datasets.shapesworld.tasks import train_edit_batch

    while True:
        for e in train_edit_batch(rng, 16):
            yield to_triplet(e)


def train(argv: list[str] | None = None, triplets: Iterable[Any] | None = None) -> None:
    """Train (or resume) on ``triplets`` (default: ShapesWorld edits); optionally export the pipeline."""
    p = S.finetune_parser(__doc__.splitlines()[0], "runs/ip2p", 8)
    p.add_argument("--drop-prob", type=float, default=0.05, help="each of: text only, image only, both")
    args = p.parse_args(argv)
    st = S.setup_finetune(args, 8)
    device, rng, unet, te, tok = st["device"], st["rng"], st["unet"], st["text_encoder"], st["tokenizer"]
    cache, opt, ema = st["cache"], st["opt"], st["ema"]
    stream = world_triplets(rng) if triplets is None else cycle_triplets(triplets)
    with torch.no_grad():
        null_text = te(S.tokenize(tok, [""]).to(device))[0]

    def make(n: int) -> dict[str, Any]:
        batch = [next(stream) for _ in range(n)]
        src_mean, _ = cache.encode(np.stack([b[0] for b in batch]))
        mean, std = cache.encode(np.stack([b[2] for b in batch]))
        return {"src": src_mean, "mean": mean, "std": std, "ids": S.tokenize(tok, [b[1] for b in batch]).to(device)}

    cache.fill(make, desc="encoding edits")
    step_fn = make_step(args, st, make, null_text)
    step, trained_s = S.fit(args, st["out"], {"unet": unet}, ema, opt, rng, step_fn)
    summary = {"step": step, "trained_s": trained_s, "unet_params": C.count_params(unet)}
    (st["out"] / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    if args.export:
        S.export_variant(
            StableDiffusionInstructPix2PixPipeline,
            args.export,
            st["shared_from"],
            st["parts"],
            ema.shadow,
            SETTINGS,
        )


def make_step(
    args: Any, st: dict[str, Any], make: Callable[[int], dict[str, Any]], null_text: torch.Tensor
) -> Callable[[int], dict[str, float]]:
    """One optimiser step with InstructPix2Pix conditioning dropout."""
    device, rng, unet, te = st["device"], st["rng"], st["unet"], st["text_encoder"]
    cache, opt, ema, sched = st["cache"], st["opt"], st["ema"], st["sched"]

    def step_fn(step: int) -> dict[str, float]:
        unet.train()
        for g in opt.param_groups:
            g["lr"] = S.lr_at(step, args.lr, 100)
        if args.refresh:
            cache.put(rng.integers(0, cache.size, args.refresh), make(args.refresh))
        b = cache.get(rng.integers(0, cache.size, args.batch_size))
        with torch.no_grad():
            cond = te(b["ids"])[0]
        pr = torch.from_numpy(rng.random(len(cond))).to(device)
        q = args.drop_prob
        drop_text = pr < 2 * q
        drop_image = (pr >= q) & (pr < 3 * q)
        cond = torch.where(drop_text[:, None, None], null_text.expand_as(cond), cond)
        src = b["src"] * (~drop_image).float()[:, None, None, None]
        latents = cache.sample_latents(b["mean"], b["std"])
        loss = S.diffusion_loss(unet, sched, latents, cond, src, args.snr_gamma, args.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet)
        return {"loss": loss.item()}

    return step_fn


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (ShapesWorld edits)."""
    train(argv)


if __name__ == "__main__":
    main()
