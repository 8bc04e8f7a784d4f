"""Train the ShapesWorld text-to-image latent diffusion model (SD-shaped UNet + small CLIP text encoder).

The UNet works on the VAE's 8x8x4 latents with cross-attention at latent /1, /2, /4 (8x8, 4x4, 2x2) and a
plain block at /8 (1x1), mirroring Stable Diffusion's depth; the text encoder is a small ``CLIPTextModel``
over a tokenizer that makes every ShapesWorld word one token. Training uses epsilon prediction with SD's
scaled-linear schedule, min-SNR loss weighting and 10% caption dropout (classifier-free guidance).
The text encoder either trains jointly for ``--freeze-text-after`` steps and is frozen afterwards, or, as
in Stable Diffusion, is the text tower of a contrastively trained CLIP model (``--text-encoder``), frozen
throughout; either way the edit fine-tunes share it. ``--init-unet`` warm-starts the UNet from an exported one.

    python -m editlab.train.sd --out runs/sd --vae weights/shapesworld/sd/vae \
        --text-encoder weights/shapesworld/clip --minutes 50 --export weights/shapesworld/sd
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch import nn
from tqdm import tqdm
from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from editlab.models.tokenizer import build_clip_tokenizer
from editlab.train import common as C

SCHEDULER_KW: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}
DEFAULT_SETTINGS = {"guidance_scale": 2.0, "num_inference_steps": 50, "resolution": 64}


def build_unet(
    channels: tuple[int, ...] = (64, 96, 64, 64),
    in_channels: int = 4,
    cross_dim: int = 128,
    heads: int = 4,
    layers_per_block: int = 1,
    groups: int = 8,
) -> UNet2DConditionModel:
    """SD-shaped UNet on 8x8 latents: CrossAttn down blocks at 8/4/2 px, a plain block at 1 px.

    ``groups`` is kept small so GroupNorm still sees several values per group at the 1x1 level."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(channels) - 1),
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_dim,
        attention_head_dim=heads,
        norm_num_groups=groups,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, hidden: int = 128, layers: int = 3, heads: int = 4) -> CLIPTextModel:
    """A small CLIP text transformer (77 positions) over ``tokenizer``'s vocabulary."""
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        projection_dim=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULER_KW)


def inference_scheduler() -> DDIMScheduler:
    """SD's DDIM configuration."""
    return DDIMScheduler(**SCHEDULER_KW, set_alpha_to_one=False, steps_offset=1)


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length (77), as the SD pipelines do."""
    return tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def min_snr_weights(sched: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR, gamma) / SNR per sample (epsilon prediction); ones when ``gamma`` <= 0."""
    if gamma <= 0:
        return torch.ones_like(t, dtype=torch.float32)
    ac = sched.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def diffusion_loss(
    unet: UNet2DConditionModel,
    sched: DDPMScheduler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    extra: torch.Tensor | None = None,
    snr_gamma: float = 5.0,
    bf16: bool = False,
) -> torch.Tensor:
    """Epsilon-prediction loss; ``extra`` channels (mask, source latents, ...) are concatenated to the input.

    ``bf16`` runs the UNet forward under bfloat16 autocast; the loss itself is computed in float32.
    """
    noise = torch.randn_like(latents)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    noisy = sched.add_noise(latents, noise, t)
    inp = noisy if extra is None else torch.cat([noisy, extra], 1)
    with C.autocast(latents.device, bf16):
        pred = unet(inp, t, encoder_hidden_states=cond).sample
    per = F.mse_loss(pred.float(), noise.float(), reduction="none").mean((1, 2, 3))
    return (per * min_snr_weights(sched, t, snr_gamma)).mean()


class LatentCache:
    """A pool of encoded training examples, refreshed a few entries per step with fresh samples.

    Entries store the VAE posterior mean and std, so every draw samples new latents as SD training does.
    """

    def __init__(self, vae: AutoencoderKL, device: torch.device, size: int) -> None:
        self.vae, self.device, self.size = vae.eval().requires_grad_(False), device, size
        self.sf = float(vae.config.scaling_factor)
        self.store: dict[str, Any] = {}
        self.filled = 0

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> (mean, std) of the posterior, on the cache device."""
        means, stds = [], []
        for i in range(0, len(images), 64):
            d = self.vae.encode(C.to_tensor(images[i : i + 64], self.device)).latent_dist
            means.append(d.mean)
            stds.append(d.std)
        return torch.cat(means), torch.cat(stds)

    def put(self, idx: np.ndarray, item: dict[str, Any]) -> None:
        """Write a batch of entries (tensors along dim 0, lists per entry) at positions ``idx``."""
        for k, v in item.items():
            if k not in self.store:
                self.store[k] = (
                    torch.zeros((self.size, *v.shape[1:]), dtype=v.dtype, device=v.device)
                    if torch.is_tensor(v)
                    else [None] * self.size
                )
            if torch.is_tensor(v):
                self.store[k][torch.as_tensor(idx, device=v.device)] = v
            else:
                for j, i in enumerate(idx):
                    self.store[k][int(i)] = v[j]

    def fill(self, make: Callable[[int], dict[str, Any]], chunk: int = 256, desc: str = "cache") -> None:
        """Fill every slot by calling ``make(n)``."""
        for start in tqdm(range(0, self.size, chunk), desc=desc, leave=False):
            n = min(chunk, self.size - start)
            self.put(np.arange(start, start + n), make(n))
        self.filled = self.size

    def get(self, idx: np.ndarray) -> dict[str, Any]:
        out = {}
        for k, v in self.store.items():
            out[k] = v[torch.as_tensor(idx, device=v.device)] if torch.is_tensor(v) else [v[int(i)] for i in idx]
        return out

    def sample_latents(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Posterior sample times the VAE scaling factor."""
        return (mean + std * torch.randn_like(mean)) * self.sf


def clip_text_tower(path: str | Path) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """The text tower and tokenizer of a ``CLIPModel`` folder (or a ``CLIPTextModel`` folder) as SD's text encoder.

    SD conditions on the last hidden state of CLIP's text transformer; the tower's weights are copied into a
    stock ``CLIPTextModel`` so the pipeline folder loads with ``CLIPTextModel.from_pretrained``.
    """
    p = Path(path)
    cfg = json.loads((p / "config.json").read_text())
    if cfg.get("model_type") == "clip_text_model":
        te = CLIPTextModel.from_pretrained(p)
    else:
        full = CLIPModel.from_pretrained(p)
        te = CLIPTextModel(full.config.text_config)
        te.load_state_dict(full.text_model.state_dict())
    tok = CLIPTokenizer.from_pretrained(p)
    tok.model_max_length = 77  # SD's prompt window, whatever the folder says
    return te.float(), tok


def load_components(path: str | Path) -> dict[str, Any]:
    """VAE, tokenizer, text encoder and UNet from an exported SD folder."""
    p = Path(path)
    return {
        "vae": AutoencoderKL.from_pretrained(p / "vae"),
        "tokenizer": CLIPTokenizer.from_pretrained(p / "tokenizer"),
        "text_encoder": CLIPTextModel.from_pretrained(p / "text_encoder"),
        "unet": UNet2DConditionModel.from_pretrained(p / "unet"),
    }


def fit(
    args: Any,
    out: Path,
    modules: dict[str, nn.Module],
    ema: C.EMA,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    step_fn: Callable[[int], dict[str, float]],
    on_checkpoint: Callable[[int], None] | None = None,
) -> tuple[int, float]:
    """Shared loop: resume, ``step_fn(step)`` until ``--steps`` or ``--minutes``, periodic atomic checkpoints.

    Returns (final step, total training seconds across resumes).
    """
    step, trained_s = 0, 0.0
    ck = C.load_checkpoint(out / C.CHECKPOINT) if args.resume else None
    if ck is not None:
        for k, m in modules.items():
            m.load_state_dict(ck["modules"][k])
        opt.load_state_dict(ck["opt"])
        ema.load_state_dict(ck["ema"])
        C.restore_rng(rng, ck["rng"])
        step, trained_s = ck["step"], ck.get("trained_s", 0.0)
        print(f"resumed from step {step}")
    budget = C.Budget(args.minutes, args.ckpt_every)
    log = C.CSVLog(out, ["step", "loss", "lr", "steps_per_s", "trained_s"])

    def save() -> None:
        C.save_checkpoint(
            out / C.CHECKPOINT,
            {
                "modules": {k: m.state_dict() for k, m in modules.items()},
                "opt": opt.state_dict(),
                "ema": ema.state_dict(),
                "rng": C.rng_state(rng),
                "step": step,
                "trained_s": trained_s + budget.elapsed(),
                "args": vars(args),
            },
        )
        if on_checkpoint is not None:
            on_checkpoint(step)

    bar = tqdm(total=args.steps, initial=step, disable=args.no_progress, dynamic_ncols=True)
    t_last, s_last, losses = time.time(), step, []
    while step < args.steps and not budget.exhausted():
        stats = step_fn(step)
        losses.append(stats["loss"])
        step += 1
        bar.update(1)
        if step % 25 == 0 or step == args.steps:
            sps = (step - s_last) / max(time.time() - t_last, 1e-9)
            t_last, s_last = time.time(), step
            loss = float(np.mean(losses))
            losses = []
            bar.set_postfix(loss=f"{loss:.4f}", sps=f"{sps:.2f}")
            log.write(
                step=step,
                loss=loss,
                lr=opt.param_groups[0]["lr"],
                steps_per_s=sps,
                trained_s=trained_s + budget.elapsed(),
            )
        if budget.checkpoint_due():
            save()
    bar.close()
    save()
    return step, trained_s + budget.elapsed()


def lr_at(step: int, base: float, warmup: int = 200) -> float:
    """Linear warm-up then constant."""
    return base * min(1.0, (step + 1) / warmup)


def export_pipeline(
    out_dir: str | Path,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    unet: UNet2DConditionModel,
    settings: dict[str, Any] | None = None,
    keep_vae: bool = True,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write a ``StableDiffusionPipeline`` folder plus ``editlab.json`` (recommended sampling settings).

    An existing ``vae`` subfolder is kept when ``keep_vae`` (the decoder may be refined separately). Weights
    are stored as ``dtype`` (fp16 by default to fit the size budget; ``from_pretrained`` loads them as fp32).
    """
    out = Path(out_dir)
    vae, text_encoder, unet = (copy.deepcopy(m).to(dtype) for m in (vae, text_encoder, unet))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=inference_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    keep = {"vae"} if keep_vae and (out / "vae" / "config.json").exists() else set()
    save_folder_swap(pipe, out, keep)
    cfg = out / "editlab.json"
    old = json.loads(cfg.read_text()) if cfg.exists() else {}
    cfg.write_text(json.dumps({**DEFAULT_SETTINGS, **old, **(settings or {})}, indent=1) + "\n")


def save_folder_swap(pipe: Any, out: Path, keep: set[str] = frozenset()) -> None:
    """``save_pretrained`` into a temp folder, then swap each component folder in (readers never see half a file).

    Component folders named in ``keep`` that already exist in ``out`` are left untouched; symlinked
    components in ``out`` are left as they are.
    """
    out.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    te_cfg = tmp / "text_encoder" / "config.json"
    if te_cfg.exists():  # fp16 on disk, but let transformers' dtype="auto" load it as fp32 like diffusers does
        cfg = json.loads(te_cfg.read_text())
        cfg["dtype"] = "float32"
        te_cfg.write_text(json.dumps(cfg, indent=2) + "\n")
    for item in sorted(tmp.iterdir()):
        dest = out / item.name
        if item.name in keep or dest.is_symlink():
            continue
        if item.is_dir():
            old = out / f".{item.name}.old{os.getpid()}"
            if dest.exists():
                os.replace(dest, old)
            os.replace(item, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(item, dest)
    shutil.rmtree(tmp, ignore_errors=True)


def make_caption_source(data: str) -> Callable[[np.random.Generator, int], tuple[np.ndarray, list[str]]]:
    """(rng, n) -> (uint8 images, captions)."""
    src = C.image_source(data)
    return lambda rng, n: src(rng, n, 64)


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) the text-to-image UNet + text encoder; optionally export the pipeline."""
    p = C.base_parser(__doc__.splitlines()[0], "runs/sd", 1_000_000, 32, 3e-4)
    p.add_argument("--vae", default="weights/shapesworld/sd/vae", help="frozen VAE (diffusers folder)")
    p.add_argument("--data", default="auto", choices=["auto", "world", "shapes"])
    p.add_argument("--channels", default="64,96,64,64")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--groups", type=int, default=8, help="GroupNorm groups")
    p.add_argument("--text-hidden", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--freeze-text-after", type=int, default=3000, help="steps of joint text-encoder training")
    p.add_argument(
        "--text-encoder",
        default=None,
        help="CLIP folder whose text tower and tokenizer become the text encoder, frozen throughout (SD's recipe)",
    )
    p.add_argument("--init-unet", default=None, help="warm-start the UNet from this diffusers UNet folder")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--snr-gamma", type=float, default=5.0)
    p.add_argument("--cache-size", type=int, default=8000)
    p.add_argument("--refresh", type=int, default=4, help="cache entries replaced by fresh scenes per step")
    p.add_argument("--export-every", type=float, default=0.0, help="also export at checkpoints every N minutes")
    args = p.parse_args(argv)

    device, rng, out = C.start_run(args)
    (out / "config.json").write_text(json.dumps(vars(args), indent=1))

    if args.text_encoder:
        text_encoder, tokenizer = clip_text_tower(args.text_encoder)
        text_encoder = text_encoder.half().float()  # exactly the weights the fp16 export will ship
        tokenizer.save_pretrained(out / "tokenizer")
    else:
        if args.resume and (out / "tokenizer" / "tokenizer_config.json").exists():
            tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")  # the one the checkpoint was trained with
        else:
            tokenizer = build_clip_tokenizer(C.world_vocabulary(), out / "tokenizer")
        text_encoder = build_text_encoder(tokenizer, args.text_hidden, args.text_layers)
    text_encoder = text_encoder.to(device)
    vae = AutoencoderKL.from_pretrained(args.vae).to(device).eval().requires_grad_(False)
    if args.init_unet:
        unet = UNet2DConditionModel.from_pretrained(args.init_unet, torch_dtype=torch.float32).to(device)
    else:
        ch = tuple(int(c) for c in args.channels.split(","))
        unet = build_unet(ch, 4, text_encoder.config.hidden_size, args.heads, args.layers_per_block, args.groups)
        unet = unet.to(device)
    print(f"unet {C.count_params(unet) / 1e6:.2f}M params, text encoder {C.count_params(text_encoder) / 1e6:.2f}M")
    sched = train_scheduler()
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text_encoder.parameters()), lr=args.lr, weight_decay=1e-2)
    ema = C.EMA(unet, args.ema_decay)
    cache = LatentCache(vae, device, args.cache_size)
    src = make_caption_source(args.data)
    empty_ids = tokenize(tokenizer, [""])[0]

    def make(n: int) -> dict[str, Any]:
        imgs, caps = src(rng, n)
        mean, std = cache.encode(imgs)
        return {"mean": mean, "std": std, "ids": tokenize(tokenizer, caps).to(device)}

    cache.fill(make, desc="encoding scenes")

    freeze_after = 0 if args.text_encoder else args.freeze_text_after

    def step_fn(step: int) -> dict[str, float]:
        frozen = step >= freeze_after
        text_encoder.requires_grad_(not frozen)
        text_encoder.train(not frozen)
        unet.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr)
        if args.refresh:
            cache.put(rng.integers(0, cache.size, args.refresh), make(args.refresh))
        b = cache.get(rng.integers(0, cache.size, args.batch_size))
        ids = b["ids"].clone()
        drop = torch.from_numpy(rng.random(len(ids)) < args.caption_dropout).to(device)
        ids[drop] = empty_ids.to(device)
        latents = cache.sample_latents(b["mean"], b["std"])
        with torch.set_grad_enabled(not frozen):
            cond = text_encoder(ids)[0]
        loss = diffusion_loss(unet, sched, latents, cond, snr_gamma=args.snr_gamma, bf16=args.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet)
        return {"loss": loss.item()}

    last_export = [time.time()]

    def on_checkpoint(step: int) -> None:
        if args.export and args.export_every and time.time() - last_export[0] >= args.export_every * 60:
            last_export[0] = time.time()
            _export(args, vae, text_encoder, tokenizer, ema.shadow, step)

    modules = {"unet": unet, "text_encoder": text_encoder}
    step, trained_s = fit(args, out, modules, ema, opt, rng, step_fn, on_checkpoint)
    summary = {
        "step": step,
        "trained_s": trained_s,
        "unet_params": C.count_params(unet),
        "text_encoder_params": C.count_params(text_encoder),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    if args.export:
        _export(args, vae, text_encoder, tokenizer, ema.shadow, step)


def _export(args: Any, vae: AutoencoderKL, te: CLIPTextModel, tok: CLIPTokenizer, unet: nn.Module, step: int) -> None:
    export_pipeline(args.export, vae, te, tok, unet)
    print(f"exported step {step} to {args.export}")


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------------------------------
# helpers shared by the edit fine-tunes (inpaint.py, ip2p.py)


def expand_unet(unet: UNet2DConditionModel, in_channels: int) -> UNet2DConditionModel:
    """A copy of ``unet`` taking ``in_channels`` inputs; the extra ``conv_in`` channels start at zero."""
    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    cfg["in_channels"] = in_channels
    new = UNet2DConditionModel.from_config(cfg)
    state = unet.state_dict()
    w = state["conv_in.weight"]
    grown = torch.zeros(w.shape[0], in_channels, *w.shape[2:], dtype=w.dtype)
    grown[:, : w.shape[1]] = w
    state["conv_in.weight"] = grown
    new.load_state_dict(state)
    return new


SHARED = ("vae", "text_encoder", "tokenizer", "scheduler")


def link_shared(out: Path, sd_dir: Path, names: tuple[str, ...] = SHARED) -> None:
    """Make ``out/<name>`` relative symlinks to ``sd_dir/<name>`` (shared components are stored once)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        dest = out / name
        target = os.path.relpath(Path(sd_dir).resolve() / name, out.resolve())
        if dest.is_symlink() and os.readlink(dest) == target:
            continue
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        dest.symlink_to(target, target_is_directory=True)


def export_variant(
    pipe_cls: type,
    out_dir: str | Path,
    sd_dir: str | Path,
    parts: dict[str, Any],
    unet: nn.Module,
    settings: dict[str, Any],
    dtype: torch.dtype = torch.float16,
) -> None:
    """Export an edit pipeline whose only own component is ``unet``; the rest are symlinks into ``sd_dir``."""
    out = Path(out_dir)
    link_shared(out, Path(sd_dir))
    pipe = pipe_cls(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=copy.deepcopy(unet).to(dtype),
        scheduler=inference_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save_folder_swap(pipe, out)
    cfg = out / "editlab.json"
    old = json.loads(cfg.read_text()) if cfg.exists() else {}
    cfg.write_text(json.dumps({**old, **settings}, indent=1) + "\n")


def finetune_parser(description: str, out: str, in_channels: int) -> Any:
    """Arguments shared by the UNet fine-tunes that start from the exported text-to-image pipeline."""
    p = C.base_parser(description, out, 1_000_000, 32, 1e-4)
    p.add_argument("--init", default="weights/shapesworld/sd", help="exported text-to-image pipeline folder")
    p.add_argument("--snr-gamma", type=float, default=5.0)
    p.add_argument("--cache-size", type=int, default=4000)
    p.add_argument("--refresh", type=int, default=4, help="cache entries replaced by fresh examples per step")
    p.add_argument(
        "--init-unet",
        default=None,
        help="warm-start the UNet from this UNet folder instead of --init's (e.g. a variant)",
    )
    p.add_argument(
        "--shared-from", default=None, help="pipeline folder the export links vae/text encoder/... to (default --init)"
    )
    p.set_defaults(in_channels=in_channels)
    return p


def setup_finetune(args: Any, in_channels: int) -> dict[str, Any]:
    """Load the frozen parts and the expanded, trainable UNet from ``--init``."""
    device, rng, out = C.start_run(args)
    (out / "config.json").write_text(json.dumps({k: v for k, v in vars(args).items() if _jsonable(v)}, indent=1))
    parts = load_components(args.init)
    base = UNet2DConditionModel.from_pretrained(args.init_unet) if args.init_unet else parts["unet"]
    unet = expand_unet(base.float(), in_channels).to(device)
    vae = parts["vae"].to(device).eval().requires_grad_(False)
    te = parts["text_encoder"].to(device).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-2)
    return {
        "device": device,
        "rng": rng,
        "out": out,
        "parts": parts,
        "unet": unet,
        "vae": vae,
        "text_encoder": te,
        "tokenizer": parts["tokenizer"],
        "opt": opt,
        "ema": C.EMA(unet, args.ema_decay),
        "sched": train_scheduler(),
        "cache": LatentCache(vae, device, args.cache_size),
        "shared_from": args.shared_from or args.init,  # where the export links its shared components
    }


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True
