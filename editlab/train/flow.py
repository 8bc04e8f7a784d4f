"""Train the ShapesWorld flow-matching model: a Stable-Diffusion-3-shaped MMDiT on the shipped VAE's latents.

The model has SD3's shape at toy size: an ``SD3Transformer2DModel`` (joint text/image attention blocks,
AdaLN conditioning on the timestep and a pooled text embedding) on the shipped 4-channel VAE's 8x8 latents;
its two CLIP text encoders are both the frozen text tower (with its projection) of editlab's ShapesWorld
CLIP, as SD3 conditions on CLIP-L and CLIP-G; the T5 slot is left empty (``text_encoder_3=None``:
``StableDiffusion3Pipeline`` then contributes no T5 tokens when called with ``max_sequence_length=0``, which
the exported ``editlab.json`` records). The text input is exactly what ``StableDiffusion3Pipeline.encode_prompt``
computes: the penultimate hidden states of both encoders concatenated along channels (``joint_attention_dim``),
and their projected EOS embeddings concatenated (``pooled_projections``).

Training is rectified flow as in SD3 (Esser et al. 2024) and diffusers' ``train_dreambooth_sd3.py``:
``x_t = (1 - sigma) x_0 + sigma * noise``, the transformer predicts ``noise - x_0`` at ``timestep = 1000 sigma``,
sigma drawn logit-normal (mean 0, std 1), 10% caption dropout (classifier-free guidance), EMA weights
exported. The exported folder loads with ``StableDiffusion3Pipeline.from_pretrained``; its VAE is the shipped
SD VAE (weights linked, config with ``shift_factor`` 0 because SD3's pipelines subtract it) and its scheduler a
``FlowMatchEulerDiscreteScheduler``.

    python -m editlab.train.flow --out runs/flow --threads 1 --minutes 80 --export weights/shapesworld/flow
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from editlab.train import common as C
from editlab.train import sd as S

#: The CLIP window of the exported tokenizer: every ShapesWorld caption, prompt and instruction has at most
#: 40 tokens, and the CLIP text tower is causal, so its first 48 positions equal those of a 77-token window.
TEXT_WINDOW = 48
SETTINGS = {"guidance_scale": 3.0, "num_inference_steps": 28, "resolution": 64,
            "pipeline_kwargs": {"max_sequence_length": 0}}  # no T5: StableDiffusion3Pipeline adds no T5 tokens


def build_transformer(
    text_dim: int,
    pooled_dim: int,
    width: int = 128,
    layers: int = 4,
    heads: int = 4,
    patch_size: int = 2,
    latent_size: int = 8,
    latent_channels: int = 4,
) -> SD3Transformer2DModel:
    """An SD3-shaped MMDiT at toy size on ``latent_size`` x ``latent_size`` latents."""
    return SD3Transformer2DModel(
        sample_size=latent_size,
        patch_size=patch_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=layers,
        attention_head_dim=width // heads,
        num_attention_heads=heads,
        joint_attention_dim=text_dim,
        caption_projection_dim=width,
        pooled_projection_dim=pooled_dim,
        pos_embed_max_size=latent_size // patch_size,
    )


def clip_text_encoder(path: str | Path) -> tuple[CLIPTextModelWithProjection, CLIPTokenizer]:
    """The text tower with its projection (SD3's ``CLIPTextModelWithProjection``) of a CLIP folder, frozen."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the vision tower's weights are left out on purpose
    try:
        te = CLIPTextModelWithProjection.from_pretrained(path)
    finally:
        hf_logging.set_verbosity(verbosity)
    tok = CLIPTokenizer.from_pretrained(path)
    tok.model_max_length = TEXT_WINDOW
    return te.float().eval().requires_grad_(False), tok


@torch.no_grad()
def encode_text(te: CLIPTextModelWithProjection, tok: CLIPTokenizer, texts: list[str],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden, pooled) as ``StableDiffusion3Pipeline.encode_prompt`` builds them from two CLIP encoders that are
    both ``te``: penultimate hidden states concatenated on channels, projected EOS embeddings concatenated."""
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(device)
    out = te(ids, output_hidden_states=True)
    hidden, pooled = out.hidden_states[-2], out.text_embeds
    return torch.cat([hidden, hidden], -1), torch.cat([pooled, pooled], -1)


def logit_normal_sigmas(n: int, device: torch.device, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """SD3's logit-normal timestep density: sigma = sigmoid(N(mean, std))."""
    return torch.sigmoid(torch.randn(n, device=device) * std + mean)


def flow_loss(model: SD3Transformer2DModel, x0: torch.Tensor, hidden: torch.Tensor, pooled: torch.Tensor,
              bf16: bool = False) -> torch.Tensor:
    """Rectified-flow loss: MSE between the prediction at x_t and the velocity ``noise - x0``."""
    noise = torch.randn_like(x0)
    sigma = logit_normal_sigmas(x0.shape[0], x0.device)
    s = sigma.view(-1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    with C.autocast(x0.device, bf16):
        pred = model(hidden_states=xt, encoder_hidden_states=hidden, pooled_projections=pooled,
                     timestep=sigma * 1000).sample
    return F.mse_loss(pred.float(), (noise - x0).float())


def flow_scheduler(shift: float = 1.0) -> FlowMatchEulerDiscreteScheduler:
    """The exported sampler: Euler on the flow ODE with SD3's time shift (1.0 = none; SD3 uses 3.0 at 1024 px)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def export_flow(out_dir: str | Path, sd_dir: str | Path, transformer: SD3Transformer2DModel,
                text_encoder: CLIPTextModelWithProjection, tokenizer: CLIPTokenizer, vae: AutoencoderKL,
                settings: dict[str, Any] | None = None, shift: float = 1.0,
                dtype: torch.dtype = torch.float16) -> None:
    """Write a ``StableDiffusion3Pipeline`` folder: own transformer, text encoder and tokenizer (the second CLIP
    slot links to the first), the VAE's weights linked from ``sd_dir`` with ``shift_factor`` 0, and
    ``editlab.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for second, first in (("text_encoder_2", "text_encoder"), ("tokenizer_2", "tokenizer")):
        dest = out / second
        if not dest.is_symlink():
            shutil.rmtree(dest, ignore_errors=True)
            dest.symlink_to(first, target_is_directory=True)
    vae_dir = out / "vae"
    vae_dir.mkdir(exist_ok=True)
    cfg = json.loads((Path(sd_dir) / "vae" / "config.json").read_text())
    cfg["shift_factor"] = 0.0
    (vae_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    weights = vae_dir / "diffusion_pytorch_model.safetensors"
    target = os.path.relpath((Path(sd_dir) / "vae" / weights.name).resolve(), vae_dir.resolve())
    if weights.is_symlink() or weights.exists():
        weights.unlink()
    weights.symlink_to(target)
    te = copy.deepcopy(text_encoder).to(dtype)
    pipe = StableDiffusion3Pipeline(
        transformer=copy.deepcopy(transformer).to(dtype),
        scheduler=flow_scheduler(shift),
        vae=vae,
        text_encoder=te,
        tokenizer=tokenizer,
        text_encoder_2=te,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    S.save_folder_swap(pipe, out, keep={"vae"})
    te_cfg = out / "text_encoder" / "config.json"
    meta = json.loads(te_cfg.read_text())
    meta["dtype"] = "float32"  # fp16 on disk, loaded as fp32 like the other components
    te_cfg.write_text(json.dumps(meta, indent=2) + "\n")
    path = out / "editlab.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**SETTINGS, **old, **(settings or {})}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) the flow transformer; optionally export the pipeline folder."""
    p = C.base_parser(__doc__.splitlines()[0], "runs/flow", 1_000_000, 32, 3e-4)
    p.add_argument("--sd", default="weights/shapesworld/sd", help="the SD folder whose VAE is used (frozen)")
    p.add_argument("--clip", default="weights/shapesworld/clip", help="CLIP folder: its text tower is both encoders")
    p.add_argument("--data", default="auto", choices=["auto", "world", "shapes"])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=2)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--cache-size", type=int, default=8000)
    p.add_argument("--refresh", type=int, default=4, help="cache entries replaced by fresh scenes per step")
    p.add_argument("--shift", type=float, default=1.0, help="time shift of the exported scheduler")
    args = p.parse_args(argv)

    device, rng, out = C.start_run(args)
    (out / "config.json").write_text(json.dumps(vars(args), indent=1))
    te, tok = clip_text_encoder(args.clip)
    te = te.half().float().to(device)  # exactly the weights the fp16 export ships
    vae = AutoencoderKL.from_pretrained(Path(args.sd) / "vae").to(device).eval().requires_grad_(False)
    text_dim, pooled_dim = 2 * te.config.hidden_size, 2 * te.config.projection_dim
    model = build_transformer(text_dim, pooled_dim, args.width, args.layers, args.heads, args.patch_size,
                              int(vae.config.sample_size) // 8, int(vae.config.latent_channels)).to(device)
    print(f"transformer {C.count_params(model) / 1e6:.2f}M params, text encoder {C.count_params(te) / 1e6:.2f}M")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    ema = C.EMA(model, args.ema_decay)
    cache = S.LatentCache(vae, device, args.cache_size)
    src = S.make_caption_source(args.data)

    def make(n: int) -> dict[str, Any]:
        imgs, caps = src(rng, n)
        mean, std = cache.encode(imgs)
        return {"mean": mean, "std": std, "caption": caps}

    cache.fill(make, desc="encoding scenes")

    def step_fn(step: int) -> dict[str, float]:
        model.train()
        for g in opt.param_groups:
            g["lr"] = S.lr_at(step, args.lr)
        if args.refresh:
            cache.put(rng.integers(0, cache.size, args.refresh), make(args.refresh))
        b = cache.get(rng.integers(0, cache.size, args.batch_size))
        drop = rng.random(len(b["caption"])) < args.caption_dropout
        hidden, pooled = encode_text(te, tok, ["" if d else c for c, d in zip(b["caption"], drop)], device)
        loss = flow_loss(model, cache.sample_latents(b["mean"], b["std"]), hidden, pooled, args.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        return {"loss": loss.item()}

    def on_checkpoint(step: int) -> None:
        if args.export:
            export_flow(args.export, args.sd, ema.shadow, te, tok, vae, shift=args.shift)

    step, trained_s = S.fit(args, out, {"transformer": model}, ema, opt, rng, step_fn, on_checkpoint)
    summary = {"step": step, "trained_s": trained_s, "transformer_params": C.count_params(model)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    if args.export:
        export_flow(args.export, args.sd, ema.shadow, te, tok, vae, shift=args.shift)
        print(f"exported step {step} to {args.export}")


if __name__ == "__main__":
    main()
