"""Train the ShapesWorld VAE: a stock ``AutoencoderKL`` with f=8 (64x64x3 -> 8x8x4 latents).

Two phases share this entry point. The full phase trains encoder and decoder with L1 + L2 reconstruction
and a small KL weight. ``--decoder-only --init RUN`` then freezes the encoder (so the latent space, and
every UNet trained on it, stays valid) and keeps improving the decoder alone.

    python -m editlab.train.vae --out runs/vae --minutes 25 --export weights/shapesworld/sd/vae
    python -m editlab.train.vae --out runs/vae-dec --decoder-only --init runs/vae --minutes 30 \
        --export weights/shapesworld/sd/vae
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm import tqdm

from editlab.train import common as C

HELDOUT_SEED = 1_000_003


def build_vae(
    channels: tuple[int, ...] = (16, 32, 64, 128), layers_per_block: int = 1, groups: int = 8
) -> AutoencoderKL:
    """An SD-shaped AutoencoderKL; ``len(channels) - 1`` downsamplings (4 levels -> f=8)."""
    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=64,
    )


def heldout_images(n: int, data: str = "auto", size: int = 64) -> np.ndarray:
    """``n`` scenes from a seed no training stream uses."""
    src = C.image_source(data)
    return src(np.random.default_rng(HELDOUT_SEED), n, size)[0]


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: np.ndarray, device: torch.device, sample: bool = False) -> np.ndarray:
    """Encode (posterior mean unless ``sample``) and decode uint8 images."""
    vae.eval()
    out = []
    for i in range(0, len(images), 64):
        x = C.to_tensor(images[i : i + 64], device)
        post = vae.encode(x).latent_dist
        z = post.sample() if sample else post.mean
        out.append(C.to_uint8(vae.decode(z).sample))
    return np.concatenate(out)


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKL, images: np.ndarray, device: torch.device) -> float:
    """1 / std of sampled latents, so scaled latents have unit variance (as SD's 0.18215)."""
    vae.eval()
    zs = [vae.encode(C.to_tensor(images[i : i + 64], device)).latent_dist.sample() for i in range(0, len(images), 64)]
    return float(1.0 / torch.cat(zs).float().std())


def export_vae(
    vae: AutoencoderKL, out_dir: str | Path, scaling_factor: float, dtype: torch.dtype = torch.float16
) -> None:
    """``save_pretrained`` with the measured scaling factor, swapped in atomically (fp16 loads back as fp32)."""
    vae.register_to_config(scaling_factor=scaling_factor)
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    copy.deepcopy(vae).to(dtype).save_pretrained(tmp, safe_serialization=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) the VAE; optionally export it."""
    p = C.base_parser(__doc__.splitlines()[0], "runs/vae", 100_000, 16, 1e-3)
    p.add_argument("--data", default="auto", choices=["auto", "world", "shapes"])
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--l2-weight", type=float, default=1.0)
    p.add_argument("--channels", default="16,32,64,128")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--decoder-only", action="store_true", help="freeze the encoder (keeps the latent space)")
    p.add_argument("--init", default=None, help="run folder or diffusers folder to start from")
    p.add_argument("--eval-n", type=int, default=128)
    p.add_argument("--scale-n", type=int, default=512, help="held-out scenes used to measure scaling_factor")
    args = p.parse_args(argv)

    device, rng, out = C.start_run(args)
    src = C.image_source(args.data)

    vae = _init_vae(args).to(device)
    if args.decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    params = [q for q in vae.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = C.EMA(vae, args.ema_decay)
    step, trained_s = 0, 0.0
    ck = C.load_checkpoint(out / C.CHECKPOINT) if args.resume else None
    if ck is not None:
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        ema.load_state_dict(ck["ema"])
        C.restore_rng(rng, ck["rng"])
        step, trained_s = ck["step"], ck.get("trained_s", 0.0)
        for g in opt.param_groups:
            g["lr"] = args.lr  # a resumed run may continue at a new learning rate
    (out / "config.json").write_text(json.dumps(vars(args), indent=1))
    held = heldout_images(args.eval_n, args.data)
    log = C.CSVLog(out, ["step", "loss", "l1", "mse", "kl", "lr", "steps_per_s", "trained_s", "heldout_psnr"])
    budget = C.Budget(args.minutes, args.ckpt_every)

    def save() -> None:
        C.save_checkpoint(
            out / C.CHECKPOINT,
            {
                "model": vae.state_dict(),
                "opt": opt.state_dict(),
                "ema": ema.state_dict(),
                "rng": C.rng_state(rng),
                "step": step,
                "trained_s": trained_s + budget.elapsed(),
                "args": vars(args),
                "config": dict(vae.config),
            },
        )

    bar = tqdm(total=args.steps, initial=step, disable=args.no_progress, dynamic_ncols=True)
    t_last, s_last = time.time(), step
    vae.train()
    while step < args.steps and not budget.exhausted():
        x = C.to_tensor(src(rng, args.batch_size, 64)[0], device)
        with C.autocast(device, args.bf16):
            if args.decoder_only:
                with torch.no_grad():
                    z = vae.encode(x).latent_dist.sample()
                kl = torch.zeros((), device=device)
            else:
                post = vae.encode(x).latent_dist
                z = post.sample()
                kl = post.kl().float().mean()
            rec = vae.decode(z).sample.float()
        l1 = (rec - x).abs().mean()
        mse = (rec - x).pow(2).mean()
        loss = l1 + args.l2_weight * mse + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(vae)
        step += 1
        bar.update(1)
        if step % 25 == 0 or step == args.steps:
            sps = (step - s_last) / max(time.time() - t_last, 1e-9)
            t_last, s_last = time.time(), step
            bar.set_postfix(loss=f"{loss.item():.4f}", sps=f"{sps:.2f}")
            row = {
                "step": step,
                "loss": loss.item(),
                "l1": l1.item(),
                "mse": mse.item(),
                "kl": kl.item(),
                "lr": args.lr,
                "steps_per_s": sps,
                "trained_s": trained_s + budget.elapsed(),
            }
            if step % 250 == 0:
                row["heldout_psnr"] = C.psnr(reconstruct(ema.shadow, held, device), held)
                bar.write(f"step {step} held-out PSNR (EMA) {row['heldout_psnr']:.2f} dB")
                vae.train()
            log.write(**row)
        if budget.checkpoint_due():
            save()
    bar.close()
    save()
    final = ema.shadow
    if args.decoder_only:
        final.encoder.load_state_dict(vae.encoder.state_dict())
        final.quant_conv.load_state_dict(vae.quant_conv.state_dict())
    score = C.psnr(reconstruct(final, held, device), held)
    if args.decoder_only and "scaling_factor" in (init_cfg := _init_config(args.init)):
        sf = float(init_cfg["scaling_factor"])
    else:
        sf = measure_scaling_factor(final, heldout_images(args.scale_n, args.data), device)
    summary = {
        "step": step,
        "trained_s": trained_s + budget.elapsed(),
        "heldout_psnr": score,
        "scaling_factor": sf,
        "params": C.count_params(final),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    if args.export:
        export_vae(final.cpu(), args.export, sf)


def _init_config(init: str | None) -> dict:
    """The saved AutoencoderKL config of an ``--init`` source (run folder summary or diffusers folder)."""
    if not init:
        return {}
    p = Path(init)
    if (p / "summary.json").exists():
        return {"scaling_factor": json.loads((p / "summary.json").read_text())["scaling_factor"]}
    if (p / "config.json").exists() and "scaling_factor" in (cfg := json.loads((p / "config.json").read_text())):
        return cfg
    return {}


def _init_vae(args) -> AutoencoderKL:
    """Fresh VAE, or weights from ``--init`` (run folder -> its EMA weights; else a diffusers folder)."""
    if args.init:
        p = Path(args.init)
        if (p / C.CHECKPOINT).exists():
            ck = C.load_checkpoint(p / C.CHECKPOINT)
            vae = AutoencoderKL.from_config(ck["config"])
            vae.load_state_dict(ck["ema"]["shadow"])
            return vae
        return AutoencoderKL.from_pretrained(p)
    ch = tuple(int(c) for c in args.channels.split(","))
    return build_vae(ch, args.layers_per_block, args.groups)


if __name__ == "__main__":
    main()
