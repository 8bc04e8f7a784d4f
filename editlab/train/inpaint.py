"""Fine-tune the text-to-image UNet into an SD-inpainting UNet (9 input channels).

Input channels are noisy latents (4) + the latent-resolution mask (1) + latents of the masked image (4),
concatenated in that order exactly as ``StableDiffusionInpaintPipeline`` does. Masks mix ShapesWorld
edit regions (the exact changed region of an edit, slightly dilated; the image is the edit's target and the
caption its target prompt), single-object masks, random rectangles and the full frame.

    python -m editlab.train.inpaint --out runs/inpaint --init weights/shapesworld/sd --minutes 25 \
        --export weights/shapesworld/sd-inpaint
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionInpaintPipeline
from scipy import ndimage

from editlab.train import common as C
from editlab.train import sd as S

SETTINGS = {"guidance_scale": 2.0, "num_inference_steps": 50, "resolution": 64}


def random_rect(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A random axis-aligned rectangle mask (bool HxW)."""
    m = np.zeros((size, size), bool)
    h, w = rng.integers(size // 8, size // 2 + 1, 2)
    y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    m[y : y + h, x : x + w] = True
    return m


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=px) if px > 0 else mask


def make_examples(rng: np.random.Generator, n: int, data: str = "auto") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` (image, mask, caption) training triples: uint8 (n,64,64,3), bool (n,64,64), captions."""
    imgs = np.empty((n, 64, 64, 3), np.uint8)
    masks = np.zeros((n, 64, 64), bool)
    caps: list[str] = []
    use_world = data == "world" or (data == "auto" and C.world_available())
    for i in range(n):
        r = rng.random()
        if use_world and r < 0.5:
            from editlab.datasets.shapesworld.tasks import train_edit_batch

            e = train_edit_batch(rng, 1)[0]
            imgs[i], cap = e.target_image, e.target_prompt
            masks[i] = dilate(np.asarray(e.mask, bool), int(rng.integers(0, 4)))
        elif use_world:
            from editlab.datasets.shapesworld import world

            scene = world.sample_scene(rng)
            imgs[i], cap = world.render(scene), world.caption(scene)
            if r < 0.7 and scene.objects:
                k = int(rng.integers(len(scene.objects)))
                masks[i] = dilate(world.object_mask(scene, k), int(rng.integers(0, 4)))
            elif r < 0.9:
                masks[i] = random_rect(rng)
            else:
                masks[i] = True
        else:
            im, cs = C.random_shapes_batch(rng, 1)
            imgs[i], cap = im[0], cs[0]
            masks[i] = random_rect(rng) if r < 0.9 else True
        caps.append(cap)
    return imgs, masks, caps


def latent_mask(masks: np.ndarray, device: torch.device) -> torch.Tensor:
    """bool (B,64,64) -> float (B,1,8,8), nearest-resized as the inpainting pipeline does."""
    m = torch.from_numpy(masks.astype(np.float32))[:, None].to(device)
    return F.interpolate(m, size=(m.shape[-2] // 8, m.shape[-1] // 8))


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) the inpainting UNet; optionally export the pipeline."""
    p = S.finetune_parser(__doc__.splitlines()[0], "runs/inpaint", 9)
    p.add_argument("--data", default="auto", choices=["auto", "world", "shapes"])
    p.add_argument("--caption-dropout", type=float, default=0.1)
    args = p.parse_args(argv)
    st = S.setup_finetune(args, 9)
    device, rng, unet, te, tok = st["device"], st["rng"], st["unet"], st["text_encoder"], st["tokenizer"]
    cache, opt, ema, sched = st["cache"], st["opt"], st["ema"], st["sched"]
    empty = S.tokenize(tok, [""])[0].to(device)

    def make(n: int) -> dict[str, Any]:
        imgs, masks, caps = make_examples(rng, n, args.data)
        mean, std = cache.encode(imgs)
        masked = imgs.copy()
        masked[masks] = 128  # 0 in [-1, 1], as image * (mask < 0.5)
        mmean, mstd = cache.encode(masked)
        return {
            "mean": mean,
            "std": std,
            "mmean": mmean,
            "mstd": mstd,
            "mask": latent_mask(masks, device),
            "ids": S.tokenize(tok, caps).to(device),
        }

    cache.fill(make, desc="encoding examples")

    def step_fn(step: int) -> dict[str, float]:
        unet.train()
        for g in opt.param_groups:
            g["lr"] = S.lr_at(step, args.lr, 100)
        if args.refresh:
            cache.put(rng.integers(0, cache.size, args.refresh), make(args.refresh))
        b = cache.get(rng.integers(0, cache.size, args.batch_size))
        ids = b["ids"].clone()
        ids[torch.from_numpy(rng.random(len(ids)) < args.caption_dropout).to(device)] = empty
        with torch.no_grad():
            cond = te(ids)[0]
        latents = cache.sample_latents(b["mean"], b["std"])
        extra = torch.cat([b["mask"], cache.sample_latents(b["mmean"], b["mstd"])], 1)
        loss = S.diffusion_loss(unet, sched, latents, cond, extra, args.snr_gamma, args.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet)
        return {"loss": loss.item()}

    step, trained_s = S.fit(args, st["out"], {"unet": unet}, ema, opt, rng, step_fn)
    summary = {"step": step, "trained_s": trained_s, "unet_params": C.count_params(unet)}
    (st["out"] / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    if args.export:
        S.export_variant(
            StableDiffusionInpaintPipeline,
            args.export,
            st["shared_from"],
            st["parts"],
            ema.shadow,
            SETTINGS,
        )


if __name__ == "__main__":
    main()
