"""Toy-size Stable-Diffusion components with random weights, built in code.

The same classes as Stable Diffusion at a tiny size (an f=8 VAE with 4 latent channels, a UNet with
cross-attention at latent /1, /2, /4, a 2-layer CLIP text encoder), the way diffusers' own tests build
them. Random weights edit nothing meaningful: this backbone exists so tests and smoke runs exercise the
whole code path quickly; every table made with it is labelled ``toy``.
"""

from __future__ import annotations

import tempfile

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from editlab.models.tokenizer import build_clip_tokenizer

TOY_WORDS = (
    "a an the of on in and with to make it turn into add remove red green blue yellow purple orange white black "
    "circle square triangle star face cube small large background photo cat dog"
).split()


def toy_components(seed: int = 0, text_dim: int = 32) -> dict:
    """Return ``{"vae", "text_encoder", "tokenizer", "unet", "scheduler"}`` with seeded random weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=5.0,  # brings this random encoder's latents to roughly unit std, as SD's 0.18215 does
    )
    with torch.no_grad():  # a near-deterministic posterior, as trained SD VAEs have (std ~ 1e-4)
        vae.quant_conv.weight[4:] = 0.0
        vae.quant_conv.bias[4:] = -18.0
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000,
            hidden_size=text_dim,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    )
    tokenizer = build_clip_tokenizer(TOY_WORDS, tempfile.mkdtemp(prefix="editlab-toytok-"))
    tokenizer_eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_encoder.config.eos_token_id = tokenizer_eos
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    vae.eval()
    unet.eval()
    text_encoder.eval()
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "scheduler": scheduler}
