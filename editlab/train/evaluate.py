"""Figures for the ShapesWorld model cards, measured on held-out scenes and edits.

    python -m editlab.train.evaluate --which vae|sd|inpaint|ip2p|flow [--n 64] [--update-settings]

``flow``: the flow-matching model's text-to-image oracle accuracy per guidance scale and flow ODE inversion
(Euler up, Euler down, caption at guidance 1) reconstruction PSNR.
``vae``: reconstruction PSNR, oracle attribute agreement of the reconstructions and a linear probe of
the latents (how linearly they encode object colour / shape / texture). ``sd``: text-to-image
oracle accuracy over a guidance-scale grid, plus DDIM inversion (DDIMInverseScheduler, guidance 1) and
reconstruction PSNR. ``inpaint`` / ``ip2p``: oracle edit accuracy and preservation on held-out edits.
Results go to ``<weights>/eval/<which>.json`` with a small sample grid ``<which>.png``;
``--update-settings`` writes the best guidance scale into the model's ``editlab.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from PIL import Image
from scipy import ndimage

from editlab.train import common as C

EVAL_SEED = 2_000_003  # held out: no trainer draws from this stream
GUIDANCE_TIE = 0.01  # text-to-image: accuracies this close count as a tie, and the lower guidance scale wins


def grid(rows: list[np.ndarray], path: Path) -> None:
    """Save rows of equally sized uint8 images as one PNG."""
    h = np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
    Image.fromarray(h).save(path)


def held_scenes(n: int) -> list[Any]:
    from editlab.datasets.shapesworld import world

    rng = np.random.default_rng(EVAL_SEED)
    return [world.sample_scene(rng) for _ in range(n)]


def held_edits(n: int) -> list[Any]:
    from editlab.datasets.shapesworld.tasks import train_edit_batch

    return train_edit_batch(np.random.default_rng(EVAL_SEED + 1), n)


def _mean_dicts(ds: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in ds for k in d})
    return {k: float(np.mean([d[k] for d in ds if k in d])) for k in keys}


@torch.no_grad()
def latent_linear_probe(
    encode: Any, n: int = 1200, train_frac: float = 0.75, seed: int = EVAL_SEED + 2, steps: int = 500
) -> dict[str, float]:
    """How linearly a latent encodes the object: held-out accuracy of a logistic-regression probe.

    ``encode`` maps a (B, 3, 64, 64) tensor in [-1, 1] to (B, C, h, w) latents. On ``n`` single-object
    scenes, the probe reads the 5 x 5 latent cells around the object's centre and predicts its colour,
    shape and texture (chance: 1/6, 1/6, 1/3 nominally).
    """
    from editlab.datasets.shapesworld import world

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, 1) for _ in range(n)]
    x = torch.from_numpy(np.stack([world.render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = torch.cat([encode(x[i : i + 100]).float().cpu() for i in range(0, n, 100)])
    h, w = z.shape[-2:]
    zp = torch.nn.functional.pad(z, (2, 2, 2, 2))
    feats = []
    for s, zi in zip(scenes, zp, strict=True):
        cx, cy = s.objects[0].centre
        ix, iy = min(int(cx * w), w - 1), min(int(cy * h), h - 1)
        feats.append(zi[:, iy : iy + 5, ix : ix + 5].flatten())
    names = {attr: [getattr(s.objects[0], attr) for s in scenes] for attr in ("color", "shape", "texture")}
    return _probe_accuracy(torch.stack(feats), names, int(n * train_frac), steps)


def _probe_accuracy(f: torch.Tensor, names: dict[str, list[str]], cut: int, steps: int) -> dict[str, float]:
    """Held-out accuracy of a logistic-regression probe from features ``f`` (rows ``cut:`` held out) to each
    attribute's values ``names[attr]``."""
    f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    out = {}
    gen = torch.Generator().manual_seed(0)
    for attr, values in names.items():
        labels = sorted(set(values))
        y = torch.tensor([labels.index(v) for v in values])
        lin = torch.nn.Linear(f.shape[1], len(labels))
        torch.nn.init.normal_(lin.weight, std=0.01, generator=gen)
        torch.nn.init.zeros_(lin.bias)
        opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
        with torch.enable_grad():
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(lin(f[:cut]), y[:cut])
                opt.zero_grad()
                loss.backward()
                opt.step()
        out[attr] = float((lin(f[cut:]).argmax(1) == y[cut:]).float().mean())
    return out


@torch.no_grad()
def text_linear_probe(
    text_encoder: Any, tokenizer: Any, n: int = 1200, train_frac: float = 0.75, seed: int = EVAL_SEED + 3
) -> dict[str, dict[str, float]]:
    """How linearly the UNet's text conditioning encodes a single object's colour, shape and grid position.

    On ``n`` one-object captions, probes read the text encoder's last hidden state (what cross-attention
    sees) averaged over the 77 positions (``mean``) and at the last, padding position (``last``), which a
    causal encoder computes from the whole caption. Chance: 1/6, 1/6, 1/9.
    """
    from editlab.datasets.shapesworld import world

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, 1) for _ in range(n)]
    ids = tokenizer(
        [world.caption(s) for s in scenes],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    device = next(text_encoder.parameters()).device
    h = torch.cat([text_encoder(ids[i : i + 200].to(device))[0].float().cpu() for i in range(0, n, 200)])
    names = {
        "color": [s.objects[0].color for s in scenes],
        "shape": [s.objects[0].shape for s in scenes],
        "position": [s.objects[0].position for s in scenes],
    }
    cut = int(n * train_frac)
    return {"mean": _probe_accuracy(h.mean(1), names, cut, 500), "last": _probe_accuracy(h[:, -1], names, cut, 500)}


@torch.no_grad()
def eval_vae(weights: Path, n: int, device: torch.device) -> tuple[dict[str, Any], list[np.ndarray]]:
    from diffusers import AutoencoderKL

    from editlab.datasets.shapesworld import oracle, world
    from editlab.train.vae import reconstruct

    vae = AutoencoderKL.from_pretrained(weights / "sd" / "vae").to(device)
    scenes = held_scenes(n)
    imgs = np.stack([world.render(s) for s in scenes])
    rec = reconstruct(vae, imgs, device)
    attr = _mean_dicts([oracle.attribute_accuracy(r, s) for r, s in zip(rec, scenes, strict=True)])
    res = {
        "n": n,
        "psnr_db": C.psnr(rec, imgs),
        "oracle_attribute_accuracy_of_reconstructions": attr,
        "latent_linear_probe": latent_linear_probe(lambda x: vae.encode(x.to(device)).latent_dist.mean),
        "scaling_factor": float(vae.config.scaling_factor),
        "params": C.count_params(vae),
    }
    return res, [imgs[:8], rec[:8]]


def _encode_prompts(pipe: Any, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(pipe.device)
    return pipe.text_encoder(ids)[0]


@torch.no_grad()
def ddim_inversion_psnr(pipe: Any, imgs: np.ndarray, prompts: list[str], steps: int = 50) -> dict[str, float]:
    """Invert with DDIMInverseScheduler at guidance 1, regenerate with DDIM, compare to the input."""
    vae, unet = pipe.vae, pipe.unet
    sf = vae.config.scaling_factor
    x = C.to_tensor(imgs, pipe.device)
    z0 = vae.encode(x).latent_dist.mean * sf
    cond = _encode_prompts(pipe, prompts)
    inv = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    fwd = DDIMScheduler.from_config(pipe.scheduler.config)
    inv.set_timesteps(steps)
    fwd.set_timesteps(steps)
    z = z0.clone()
    for t in inv.timesteps:
        z = inv.step(unet(z, t, encoder_hidden_states=cond).sample, t, z).prev_sample
    for t in fwd.timesteps:
        z = fwd.step(unet(z, t, encoder_hidden_states=cond).sample, t, z).prev_sample
    rec = C.to_uint8(vae.decode(z / sf).sample)
    vae_only = C.to_uint8(vae.decode(z0 / sf).sample)
    return {
        "inversion_reconstruction_psnr_db": C.psnr(rec, imgs),
        "vae_only_psnr_db": C.psnr(vae_only, imgs),
        "_rec": rec,
    }


def text_to_image_by_guidance(generate: Any, scenes: list[Any], guidances: list[float],
                              batch: int = 32) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Oracle scores of text-to-image samples of ``scenes``' captions per guidance scale.

    ``generate(prompts, guidance, generator)`` returns float images in [0, 1] (``output_type="np"``); one
    generator seeded 0 per scale. Returns ({scale: figures}, first 8 images per scale)."""
    from editlab.datasets.shapesworld import oracle, world

    prompts = [world.caption(s) for s in scenes]
    single = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
    by_guidance, rows = {}, []
    for g in guidances:
        t0 = time.time()
        gen = torch.Generator("cpu").manual_seed(0)
        out = [generate(prompts[i : i + batch], g, gen) for i in range(0, len(scenes), batch)]
        imgs = (np.concatenate(out) * 255).round().astype(np.uint8)
        sa = [oracle.scene_accuracy(im, s) for im, s in zip(imgs, scenes, strict=True)]
        aa = [oracle.attribute_accuracy(im, s) for im, s in zip(imgs, scenes, strict=True)]
        allok = [float(all(d.values())) for d in sa]
        by_guidance[str(g)] = {
            "scene_all_correct": float(np.mean(allok)),
            "scene_checks": _mean_dicts([{k: float(v) for k, v in d.items()} for d in sa]),
            "attribute_accuracy": _mean_dicts(aa),
            "attribute_accuracy_mean": float(np.mean([np.mean(list(d.values())) for d in aa])),
            "single_object_all_correct": float(np.mean([allok[i] for i in single])) if single else None,
            "seconds": time.time() - t0,
        }
        rows.append(imgs[:8])
    return by_guidance, rows


def best_text_guidance(by_guidance: dict[str, Any]) -> float:
    """The lowest scale within a point of the best mean attribute accuracy: editors that invert the source drift
    less at low guidance."""
    acc = {k: v["attribute_accuracy_mean"] for k, v in by_guidance.items()}
    return float(min((k for k in acc if acc[k] >= max(acc.values()) - GUIDANCE_TIE), key=float))


def eval_sd(weights: Path, n: int, device: torch.device, guidances: list[float], steps: int) -> tuple[dict, list]:
    from diffusers import StableDiffusionPipeline

    from editlab.datasets.shapesworld import world

    pipe = StableDiffusionPipeline.from_pretrained(weights / "sd").to(device)
    pipe.set_progress_bar_config(disable=True)
    scenes = held_scenes(n)
    prompts = [world.caption(s) for s in scenes]
    res: dict[str, Any] = {"n": n, "num_inference_steps": steps}

    def generate(batch: list[str], g: float, gen: torch.Generator) -> np.ndarray:
        return pipe(batch, guidance_scale=g, num_inference_steps=steps, generator=gen, output_type="np").images

    res["by_guidance"], rows = text_to_image_by_guidance(generate, scenes, guidances)
    res["best_guidance_scale"] = best_text_guidance(res["by_guidance"])
    truth = np.stack([world.render(s) for s in scenes])
    m = min(n, 32)
    inv = ddim_inversion_psnr(pipe, truth[:m], prompts[:m], 50)
    rows = [truth[:8], *rows, inv.pop("_rec")[:8]]
    res["ddim_inversion"] = {"n": m, "steps": 50, "guidance_scale": 1.0, **inv}
    res["prompts_first_row"] = prompts[:8]
    res["text_linear_probe"] = text_linear_probe(pipe.text_encoder, pipe.tokenizer)
    return res, rows


@torch.no_grad()
def flow_inversion_psnr(pipe: Any, imgs: np.ndarray, prompts: list[str], steps: int) -> dict[str, float]:
    """Euler inversion of the flow ODE (sigma 0 -> 1 on the sampler's grid, the caption at guidance 1), then Euler
    sampling back; PSNR of the reconstruction and of the VAE alone."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    vae, tr = pipe.vae, pipe.transformer
    sf, shift = vae.config.scaling_factor, vae.config.shift_factor
    z0 = (vae.encode(C.to_tensor(imgs, pipe.device)).latent_dist.mode() - shift) * sf
    emb, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                           max_sequence_length=0)
    sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    sig = sched.sigmas.to(pipe.device)

    def v(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return tr(hidden_states=z, timestep=(1000 * s).expand(len(z)), encoder_hidden_states=emb,
                  pooled_projections=pooled).sample

    z = z0.clone()
    for i in range(steps, 0, -1):  # upwards: sigma_i -> sigma_{i-1}, velocity at the current point
        z = z + (sig[i - 1] - sig[i]) * v(z, sig[i])
    for i in range(steps):
        z = z + (sig[i + 1] - sig[i]) * v(z, sig[i])
    decode = lambda x: C.to_uint8(vae.decode(x / sf + shift).sample)  # noqa: E731
    rec = decode(z)
    return {"inversion_reconstruction_psnr_db": C.psnr(rec, imgs), "vae_only_psnr_db": C.psnr(decode(z0), imgs),
            "_rec": rec}


def eval_flow(weights: Path, n: int, device: torch.device, guidances: list[float], steps: int) -> tuple[dict, list]:
    """The flow-matching model: text-to-image oracle scores per guidance scale, flow ODE inversion PSNR."""
    from diffusers import StableDiffusion3Pipeline

    from editlab.datasets.shapesworld import world

    folder = weights / "flow"
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None).to(device)
    pipe.set_progress_bar_config(disable=True)
    extra = json.loads((folder / "editlab.json").read_text()).get("pipeline_kwargs", {})
    scenes = held_scenes(n)
    prompts = [world.caption(s) for s in scenes]
    res: dict[str, Any] = {"n": n, "num_inference_steps": steps, "shift": float(pipe.scheduler.config.shift)}

    def generate(batch: list[str], g: float, gen: torch.Generator) -> np.ndarray:
        return pipe(batch, guidance_scale=g, num_inference_steps=steps, generator=gen, output_type="np",
                    height=64, width=64, **extra).images

    res["by_guidance"], rows = text_to_image_by_guidance(generate, scenes, guidances)
    res["best_guidance_scale"] = best_text_guidance(res["by_guidance"])
    truth = np.stack([world.render(s) for s in scenes])
    m = min(n, 32)
    inv = flow_inversion_psnr(pipe, truth[:m], prompts[:m], steps)
    rows = [truth[:8], *rows, inv.pop("_rec")[:8]]
    res["flow_inversion"] = {"n": m, "steps": steps, "guidance_scale": 1.0, **inv}
    res["prompts_first_row"] = prompts[:8]
    res["transformer_params"] = C.count_params(pipe.transformer)
    return res, rows


def _dilate(mask: np.ndarray, px: int = 2) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=px)


def eval_edit(which: str, weights: Path, n: int, device: torch.device, guidances: list[float], steps: int) -> tuple:
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionInstructPix2PixPipeline

    from editlab.datasets.shapesworld import oracle

    edits = held_edits(n)
    folder = weights / ("sd-inpaint" if which == "inpaint" else "ip2p")
    cls = StableDiffusionInpaintPipeline if which == "inpaint" else StableDiffusionInstructPix2PixPipeline
    pipe = cls.from_pretrained(folder).to(device)
    pipe.set_progress_bar_config(disable=True)
    res: dict[str, Any] = {"n": n, "num_inference_steps": steps, "by_guidance": {}}
    src = [Image.fromarray(e.source_image) for e in edits]
    rows = [np.stack([e.source_image for e in edits[:8]]), np.stack([e.target_image for e in edits[:8]])]
    for g in guidances:
        t0 = time.time()
        gen = torch.Generator("cpu").manual_seed(0)
        out = []
        for i in range(0, n, 32):
            chunk = edits[i : i + 32]
            if which == "inpaint":
                masks = [Image.fromarray((_dilate(e.mask) * 255).astype(np.uint8)) for e in chunk]
                r = pipe(
                    [e.target_prompt for e in chunk],
                    image=src[i : i + 32],
                    mask_image=masks,
                    height=64,
                    width=64,
                    guidance_scale=g,
                    num_inference_steps=steps,
                    generator=gen,
                    output_type="np",
                )
            else:
                r = pipe(
                    [e.instruction for e in chunk],
                    image=src[i : i + 32],
                    guidance_scale=g,
                    image_guidance_scale=1.5,
                    num_inference_steps=steps,
                    generator=gen,
                    output_type="np",
                )
            out.append(r.images)
        imgs = (np.concatenate(out) * 255).round().astype(np.uint8)
        acc = [oracle.edit_accuracy(im, e.meta()) for im, e in zip(imgs, edits, strict=True)]
        pres = [oracle.preservation(im, e.meta()) for im, e in zip(imgs, edits, strict=True)]
        by_task: dict[str, list[float]] = {}
        for a, e in zip(acc, edits, strict=True):
            by_task.setdefault(e.task_type.value, []).append(a)
        res["by_guidance"][str(g)] = {
            "edit_accuracy": float(np.mean(acc)),
            "preservation": float(np.mean(pres)),
            "psnr_to_target_db": C.psnr(imgs, np.stack([e.target_image for e in edits])),
            "edit_accuracy_by_task": {k: float(np.mean(v)) for k, v in sorted(by_task.items())},
            "seconds": time.time() - t0,
        }
        if which == "ip2p":
            res["by_guidance"][str(g)]["image_guidance_scale"] = 1.5
        rows.append(imgs[:8])
    best = max(
        res["by_guidance"],
        key=lambda k: res["by_guidance"][k]["edit_accuracy"] + 0.5 * res["by_guidance"][k]["preservation"],
    )
    res["best_guidance_scale"] = float(best)
    res["instructions_first_row"] = [e.instruction for e in edits[:8]]
    res["vae_ceiling"] = vae_ceiling(pipe.vae, edits, device)
    return res, rows


def vae_ceiling(vae: Any, edits: list[Any], device: torch.device) -> dict[str, float]:
    """Oracle scores of the exact ground-truth targets after a round trip through ``vae``: the most any
    model decoding through this VAE can score."""
    from editlab.datasets.shapesworld import oracle
    from editlab.train.vae import reconstruct

    targets = np.stack([e.target_image for e in edits])
    rec = reconstruct(vae, targets, device)
    return {
        "edit_accuracy": float(np.mean([oracle.edit_accuracy(r, e.meta()) for r, e in zip(rec, edits, strict=True)])),
        "preservation": float(np.mean([oracle.preservation(r, e.meta()) for r, e in zip(rec, edits, strict=True)])),
        "psnr_to_target_db": C.psnr(rec, targets),
    }


def main(argv: list[str] | None = None) -> None:
    """Evaluate one shipped model and write its figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--which", required=True, choices=["vae", "sd", "inpaint", "ip2p", "flow"])
    p.add_argument("--weights", default="weights/shapesworld")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", default=None, help="comma-separated guidance scales to sweep")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for <which>.json/.png (default <weights>/eval)")
    p.add_argument("--update-settings", action="store_true", help="write the best guidance into editlab.json")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    device = C.pick_device(args.device)
    weights = Path(args.weights)
    out = Path(args.out) if args.out else weights / "eval"
    out.mkdir(parents=True, exist_ok=True)
    default_g = {"vae": "", "sd": "1.0,2.0,3.0,5.0", "inpaint": "1.0,2.0,4.0", "ip2p": "1.5,3.0,5.0",
                 "flow": "1.0,2.0,3.0,5.0"}[args.which]
    guidances = [float(g) for g in (args.guidance or default_g).split(",") if g]
    t0 = time.time()
    if args.which == "vae":
        res, rows = eval_vae(weights, args.n, device)
    elif args.which == "sd":
        res, rows = eval_sd(weights, args.n, device, guidances, args.steps)
    elif args.which == "flow":
        res, rows = eval_flow(weights, args.n, device, guidances, args.steps)
    else:
        res, rows = eval_edit(args.which, weights, args.n, device, guidances, args.steps)
    res["eval_seconds"] = time.time() - t0
    res["device"] = str(device)
    (out / f"{args.which}.json").write_text(json.dumps(res, indent=1) + "\n")
    grid(rows, out / f"{args.which}.png")
    print(json.dumps(res, indent=1))
    if args.update_settings and "best_guidance_scale" in res:
        folder = weights / {"sd": "sd", "inpaint": "sd-inpaint", "ip2p": "ip2p", "flow": "flow"}[args.which]
        cfg = folder / "editlab.json"
        old = json.loads(cfg.read_text()) if cfg.exists() else {}
        old.update(guidance_scale=res["best_guidance_scale"], num_inference_steps=args.steps, resolution=64)
        cfg.write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    main()
