"""Toy-size backbones of every family, real diffusers / transformers classes with random weights, built offline.

The way diffusers' own pipeline tests build them (``tests/pipelines/*/test_*.py`` ``get_dummy_components``), but
without the hub: the tokenizers are made here (a CLIP BPE over :data:`~editlab.models.toy.TOY_WORDS`, a T5
unigram over the same words, a byte-level BPE with Qwen2.5-VL's chat and vision tokens), so everything runs
offline. Sizes are chosen so that a 64x64 edit with a few steps takes well under a second on a CPU (Qwen-Image-Edit
excepted: its pipelines always encode the source at about 1024x1024, so its toy edits take about 15 s).

Families (:mod:`editlab.models.families`) and their components:

``sdxl``            UNet with text-time conditioning (``variant``: ``base`` 4, ``inpaint`` 9, ``ip2p`` 8 input
                    channels), ``CLIPTextModel`` + ``CLIPTextModelWithProjection``, Euler scheduler
``sd3``             ``SD3Transformer2DModel``, two ``CLIPTextModelWithProjection`` and a ``T5EncoderModel``
``flux``            ``FluxTransformer2DModel`` with a guidance embedding (FLUX.1-dev's distillation), CLIP + T5
``flux-fill``       the FLUX transformer with FLUX Fill's mask and masked-image input channels
``flux-kontext``    the FLUX transformer as FLUX.1 Kontext uses it (source tokens appended)
``qwen-image-edit`` ``QwenImageTransformer2DModel``, ``AutoencoderKLQwenImage``, a tiny
(``-plus``)         ``Qwen2_5_VLForConditionalGeneration`` with its ``Qwen2VLProcessor``

Random weights edit nothing meaningful: these exist so tests and smoke runs exercise each family's code path;
tables made with them say ``toy``.
"""

from __future__ import annotations

import string
import tempfile
from typing import Any

import torch

from editlab.models.backbone import Backbone, place_modules, resolve_device, resolve_dtype
from editlab.models.families import get_family
from editlab.models.toy import TOY_WORDS, toy_components

TOY_FAMILIES = ("sdxl", "sd3", "flux", "flux-fill", "flux-kontext", "qwen-image-edit", "qwen-image-edit-plus")
SDXL_VARIANTS = {"base": 4, "inpaint": 9, "ip2p": 8}
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")


# --------------------------------------------------------------------------------------------------------
# Text encoders and tokenizers
# --------------------------------------------------------------------------------------------------------
def clip_text(seed: int, hidden: int = 32, projection: bool = False) -> tuple[Any, Any]:
    """A 2-layer CLIP text model (with a projection head for SD3 / SDXL's second encoder) and its tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    comps = toy_components(seed, text_dim=hidden)
    tokenizer = comps["tokenizer"]
    config = CLIPTextConfig(
        vocab_size=1000, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=hidden, bos_token_id=0, pad_token_id=1,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    return model, tokenizer


def t5_tokenizer(out_dir: str | None = None) -> Any:
    """A T5 unigram tokenizer in which each toy word is one piece (characters for anything else)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -1.0) for w in TOY_WORDS] + [(c, -5.0) for c in string.ascii_lowercase + string.digits]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0)
    out = out_dir or tempfile.mkdtemp(prefix="editlab-t5tok-")
    tok.save_pretrained(out)
    return T5TokenizerFast.from_pretrained(out)


def t5_text(seed: int, d_model: int = 32) -> tuple[Any, Any]:
    """A 2-layer ``T5EncoderModel`` and its tokenizer."""
    from transformers import T5Config, T5EncoderModel

    tok = t5_tokenizer()
    config = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval(), tok


def qwen_tokenizer() -> Any:
    """A byte-level BPE ``Qwen2Tokenizer`` learnt on the toy words (any other text falls back to bytes), with
    Qwen2.5-VL's chat and vision special tokens."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([" ".join(TOY_WORDS)] * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    out = tempfile.mkdtemp(prefix="editlab-qwentok-")
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL[1:])})
    tok.save_pretrained(out)
    return Qwen2Tokenizer.from_pretrained(out)


def qwen_text(seed: int, hidden: int = 16) -> tuple[Any, Any, Any]:
    """A 2-layer ``Qwen2_5_VLForConditionalGeneration`` (2-layer vision tower), its tokenizer and processor."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": hidden, "intermediate_size": hidden, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": len(tok),
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0},
        vision_config={"depth": 2, "hidden_size": hidden, "intermediate_size": hidden, "num_heads": 2,
                       "out_hidden_size": hidden},
        hidden_size=hidden, vocab_size=len(tok), vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], vision_token_id=ids["<|image_pad|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # at most 8x8 patches of 14 px reach the vision tower, whatever size the pipeline resizes the source to
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
                                 tokenizer=tok, video_processor=Qwen2VLVideoProcessor())
    return model, tok, processor


# --------------------------------------------------------------------------------------------------------
# Per-family components
# --------------------------------------------------------------------------------------------------------
def _flow_vae(seed: int, latent_channels: int = 4) -> Any:
    """A toy f=8 VAE with ``shift_factor`` 0 (SD3's and FLUX's pipelines subtract one); SD3's inpainting pipeline
    insists on SD3's 16 latent channels."""
    if latent_channels == 4:
        vae = toy_components(seed)["vae"]
    else:
        from diffusers import AutoencoderKL

        torch.manual_seed(seed)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16),
                            latent_channels=latent_channels, norm_num_groups=4, sample_size=64,
                            scaling_factor=5.0).eval()
    vae.register_to_config(shift_factor=0.0)
    return vae


def _flow_scheduler(shift: float = 1.0, dynamic: bool = False) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    if dynamic:  # FLUX / Qwen: the shift depends on the image's token count (mu)
        return FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                               base_image_seq_len=256, max_image_seq_len=4096)
    return FlowMatchEulerDiscreteScheduler(shift=shift)


def sdxl_components(seed: int, variant: str = "base") -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    if variant not in SDXL_VARIANTS:
        raise ValueError(f"unknown sdxl toy variant '{variant}', available: {', '.join(SDXL_VARIANTS)}")
    te, tok = clip_text(seed, 32)
    te2, tok2 = clip_text(seed + 1, 32, projection=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=SDXL_VARIANTS[variant], out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=8,
    ).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return {"vae": toy_components(seed)["vae"], "text_encoder": te, "tokenizer": tok, "unet": unet,
            "scheduler": scheduler, "text_encoder_2": te2, "tokenizer_2": tok2}


def sd3_components(seed: int) -> dict[str, Any]:
    from diffusers import SD3Transformer2DModel

    te, tok = clip_text(seed, 32, projection=True)
    te2, tok2 = clip_text(seed + 1, 32, projection=True)
    te3, tok3 = t5_text(seed, d_model=64)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=8,
    ).eval()
    return {"vae": _flow_vae(seed, 16), "text_encoder": te, "tokenizer": tok, "scheduler": _flow_scheduler(3.0),
            "transformer": transformer, "text_encoder_2": te2, "tokenizer_2": tok2, "text_encoder_3": te3,
            "tokenizer_3": tok3}


def flux_components(seed: int, fill: bool = False) -> dict[str, Any]:
    from diffusers import FluxTransformer2DModel

    te, tok = clip_text(seed, 32)
    te2, tok2 = t5_text(seed, d_model=32)
    packed = 4 * 4  # 4 latent channels, 2x2 packing
    in_channels = packed + packed + 8 * 8 * 4 if fill else packed  # Fill: + masked-image latents + packed mask
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=in_channels, out_channels=packed, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=True, axes_dims_rope=[4, 4, 8],
    ).eval()
    return {"vae": _flow_vae(seed), "text_encoder": te, "tokenizer": tok, "scheduler": _flow_scheduler(dynamic=True),
            "transformer": transformer, "text_encoder_2": te2, "tokenizer_2": tok2}


def qwen_edit_components(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    te, tok, processor = qwen_text(seed, 16)
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    ).eval()
    torch.manual_seed(seed)
    # f=32 (five down-sampling stages): the pipelines encode the source at about 1024x1024 whatever its size, so a
    # smaller factor would make every toy edit encode and attend over thousands of tokens
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=4, dim_mult=[1, 1, 2, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True, True, True], latents_mean=[0.0] * 4,
                                 latents_std=[1.0] * 4).eval()
    return {"vae": vae, "text_encoder": te, "tokenizer": tok, "scheduler": _flow_scheduler(dynamic=True),
            "transformer": transformer, "processor": processor}


def family_components(family: str, seed: int = 0, variant: str = "base") -> dict[str, Any]:
    """The toy components of ``family`` by their pipeline names."""
    if family == "sdxl":
        return sdxl_components(seed, variant)
    if family == "sd3":
        return sd3_components(seed)
    if family in ("flux", "flux-kontext"):
        return flux_components(seed)
    if family == "flux-fill":
        return flux_components(seed, fill=True)
    if family in ("qwen-image-edit", "qwen-image-edit-plus"):
        return qwen_edit_components(seed)
    raise ValueError(f"no toy components for family '{family}', available: {', '.join(TOY_FAMILIES)}")


def toy_family_backbone(
    family: str = "flux",
    seed: int = 0,
    variant: str = "base",
    guidance_scale: float | None = None,
    num_inference_steps: int = 4,
    resolution: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    name: str | None = None,
    preset: str | None = None,
    speed: dict[str, Any] | None = None,
    resolution_policy: str = "fixed",
) -> Backbone:
    """A toy :class:`Backbone` of ``family`` (random weights; see the module docstring).

    ``resolution_policy`` defaults to ``fixed`` even for Kontext / Qwen-Image-Edit, so a toy edit works at 64 px;
    ``guidance_scale`` defaults to the family's recommended scale."""
    from editlab.models.speed import apply_speed, normalize_speed

    fam = get_family(family)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    comps = family_components(family, seed, variant)
    place_modules(comps, dev, torch_dtype)
    core = {k: comps.pop(k, None) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    label = f"toy-{family}" + (f"-{variant}" if variant != "base" else "")
    backbone = Backbone(
        name=name or label,
        source=f"{label}(seed={seed}, random weights)",
        **core,
        guidance_scale=fam.guidance_scale if guidance_scale is None else guidance_scale,
        num_inference_steps=num_inference_steps,
        resolution=resolution,
        device=dev,
        dtype=torch_dtype,
        family=family,
        preset=preset,
        parts=comps,
        speed=normalize_speed(speed) | {"dtype": str(torch_dtype).replace("torch.", "")},
        pipeline_class=None,
        resolution_policy=resolution_policy,
    )
    apply_speed(backbone)
    return backbone
