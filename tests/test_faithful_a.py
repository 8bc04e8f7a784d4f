"""Faithfulness to the official code: Plug-and-Play, MasaCtrl, Blended Latent Diffusion, Imagic, and the paper
presets of every method (each test fails if the deviation it pins comes back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from diffusers import DDIMScheduler
from PIL import Image

from editlab.bench.runner import build
from editlab.methods.blended_latent import BlendedLatentDiffusion
from editlab.methods.common import decode_latents, encode_image, encode_prompt
from editlab.methods.editors.masactrl import MasaCtrl
from editlab.methods.editors.pnp import OFFICIAL_NEGATIVE_PROMPT
from editlab.methods.imagic import Imagic
from editlab.methods.inversion_editing import InversionEditing
from editlab.models.backbone import toy_backbone
from editlab.models.toy_variants import toy_sd15_backbone, toy_variant_backbone
from editlab.registry import EDITORS, METHODS
from editlab.types import Sample


@pytest.fixture(scope="module")
def backbone():
    return toy_backbone(seed=0, num_inference_steps=4, device="cpu")


def _sample(size: int = 64) -> Sample:
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:] = (40, 160, 40)
    arr[16:48, 16:48] = (220, 30, 30)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    image, mask_image = Image.fromarray(arr), Image.fromarray(mask)
    if size != 64:
        image, mask_image = image.resize((size, size), Image.NEAREST), mask_image.resize((size, size), Image.NEAREST)
    return Sample(id="s0", source_image=image, source_prompt="a red square", target_prompt="a blue circle",
                  mask=mask_image)


# --------------------------------------------------------------------------------------------------------
# Plug-and-Play: residual-branch injection, the target's own shortcut, the negative prompt
# --------------------------------------------------------------------------------------------------------
def _pnp_block_calls(backbone, editor: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input, conv2 output before injection, block output after any injection) of ``up_blocks[1].resnets[1]`` at
    every UNet call; the block output is read where the next module receives it."""
    resnet = backbone.unet.up_blocks[1].resnets[1]
    inputs, residuals, outputs = [], [], []
    hooks = [resnet.register_forward_pre_hook(lambda m, a: inputs.append(a[0].clone())),
             resnet.conv2.register_forward_hook(lambda m, a, o: residuals.append(o.clone())),  # runs before PnP's
             backbone.unet.up_blocks[1].attentions[1].register_forward_pre_hook(
                 lambda m, a: outputs.append(a[0].clone()))]
    try:
        method = InversionEditing("ddim", editor)
        method.setup(backbone)
        inputs.clear(), residuals.clear(), outputs.clear()  # only the edit's calls (4 rows: 2 branches x CFG)
        method.edit(_sample(), torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    return [c for c in zip(inputs, residuals, outputs) if c[0].shape[0] == 4]


def test_pnp_injects_the_residual_branch_and_keeps_the_targets_shortcut(backbone) -> None:
    """Official ``register_conv_control_efficient``: the target's block output is its own shortcut of its own input
    plus the source's residual branch; the shortcut path is never the source's."""
    resnet = backbone.unet.up_blocks[1].resnets[1]
    calls = _pnp_block_calls(backbone, {"name": "pnp"})
    assert len(calls) == backbone.num_inference_steps
    injected = int(0.8 * backbone.num_inference_steps)
    for step, (x, residual, out) in enumerate(calls):
        shortcut = resnet.conv_shortcut(x) if resnet.conv_shortcut is not None else x
        for row in (1, 3):  # the target's unconditional and conditional rows
            source_part = residual[0] if step < injected else residual[row]
            expected = (shortcut[row] + source_part) / resnet.output_scale_factor
            torch.testing.assert_close(out[row], expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out[3], out[0], atol=1e-3)  # the target's block output is not the source's
    # the earlier behaviour, as a named option: the whole block output, shortcut included, is the source's
    for step, (_, _, out) in enumerate(_pnp_block_calls(backbone, {"name": "pnp", "injection": "block_output"})):
        if step < injected:
            torch.testing.assert_close(out[3], out[0])


def test_pnp_negative_prompt_reaches_the_targets_unconditional_row(backbone) -> None:
    seen = []

    def record(module, args, kwargs):
        if kwargs["encoder_hidden_states"].shape[0] == 4:
            seen.append(kwargs["encoder_hidden_states"].clone())

    handle = backbone.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        method = InversionEditing("ddim", {"name": "pnp", "negative_prompt": "a green star"})
        method.setup(backbone)
        method.edit(_sample(), torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    negative, empty = encode_prompt(backbone, ["a green star"])[0], encode_prompt(backbone, [""])[0]
    assert len(seen) == backbone.num_inference_steps
    for embeds in seen:  # rows: source uncond, target uncond, source cond, target cond
        torch.testing.assert_close(embeds[0], empty)  # the features come from the source with the empty prompt
        torch.testing.assert_close(embeds[1], negative)
    assert type(EDITORS.get("pnp")).__name__ and EDITORS.get("pnp").presets["sd"].settings["negative_prompt"] == \
        OFFICIAL_NEGATIVE_PROMPT == "ugly, blurry, black, low res, unrealistic"


# --------------------------------------------------------------------------------------------------------
# MasaCtrl: the source branch is the empty prompt over the empty-prompt inversion
# --------------------------------------------------------------------------------------------------------
def _reference_reconstruction(backbone, x_t: torch.Tensor, steps: int) -> torch.Tensor:
    """Unguided DDIM denoising with the empty prompt, written out with diffusers' scheduler."""
    scheduler = DDIMScheduler.from_config(backbone.scheduler.config)
    scheduler.set_timesteps(steps)
    empty = encode_prompt(backbone, [""])
    x = x_t.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(backbone.unet(x, t, encoder_hidden_states=empty).sample, t, x).prev_sample
    return x


def test_masactrl_source_branch_retraces_the_empty_prompt_inversion(backbone) -> None:
    """At the official editing scale (7.5) the source branch, "" in both guidance halves over the ""-inversion,
    equals the unguided reconstruction to float tolerance; the earlier source-prompt branch at 7.5 drifts."""
    sample = _sample()
    method = InversionEditing("ddim", "masactrl", guidance_scale=7.5)
    method.setup(backbone)
    assert method.cache_fields(sample, 4, 7.5, 0)["source_prompt"] == ""  # inverted with the empty prompt
    request, _ = method.request(sample, torch.Generator().manual_seed(0))
    source_branch = method.editor.denoise_branches(request)[0:1]
    reference = _reference_reconstruction(backbone, request.result.latents[-1:], 4)
    torch.testing.assert_close(source_branch, reference, rtol=1e-4, atol=1e-4)
    x0 = request.result.latents[0:1]
    official = (source_branch - x0).abs().mean().item()
    earlier = InversionEditing("ddim", {"name": "masactrl", "source_prompt": "source"}, guidance_scale=7.5)
    earlier.setup(backbone)
    request, _ = earlier.request(sample, torch.Generator().manual_seed(0))
    drifted = (earlier.editor.denoise_branches(request)[0:1] - x0).abs().mean().item()
    assert official < drifted, (official, drifted)  # toy, 4 steps: 0.47 vs 0.92 (latent mean abs error)


def test_masactrl_preset_and_validation() -> None:
    assert MasaCtrl.presets["sd"].settings == {"start_step": 4, "start_layer": 10, "source_prompt": "empty"}
    assert MasaCtrl().inversion_prompt == "empty" and MasaCtrl(source_prompt="source").inversion_prompt == "source"
    with pytest.raises(ValueError, match="source_prompt"):
        MasaCtrl(source_prompt="target")
    with pytest.raises(ValueError, match="16 transformer blocks"):
        MasaCtrl(start_layer=17)


# --------------------------------------------------------------------------------------------------------
# Blended Latent Diffusion: pure-noise start, background at the step's t
# --------------------------------------------------------------------------------------------------------
def _first_unet_input(method, sample: Sample, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    seen = []
    handle = method.backbone.unet.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        out = method.edit(sample, torch.Generator().manual_seed(seed))
    finally:
        handle.remove()
    return seen[0][:1], np.asarray(out.image)


def test_blended_latent_starts_from_the_generators_noise(backbone) -> None:
    """Official SD script: ``latents = torch.randn(..., generator=generator)``; inside the mask the first latents
    are that noise, not the noised source (which remains as ``init="source"``, the paper's Algorithm 1)."""
    sample = _sample()
    method = BlendedLatentDiffusion()
    method.setup(backbone)
    assert (method.init, method.blend) == ("noise", "current")
    first, _ = _first_unet_input(method, sample, seed=3)
    noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(3))
    inside = torch.from_numpy(np.asarray(sample.mask.resize(first.shape[-2:], Image.NEAREST)) > 127)
    assert inside.any()
    torch.testing.assert_close(first[0][:, inside], noise[0][:, inside], rtol=0, atol=0)
    paper = BlendedLatentDiffusion(init="source")
    paper.setup(backbone)
    assert not torch.allclose(_first_unet_input(paper, sample, seed=3)[0], noise)


def test_blended_latent_background_is_the_source_noised_to_the_steps_t(backbone) -> None:
    """With an empty mask the result is the last blend: the source noised to the last step's t (official), drawn
    from the generator after the initial noise and one draw per earlier step."""
    sample = _sample()
    sample.mask = Image.new("L", (64, 64), 0)
    method = BlendedLatentDiffusion()
    method.setup(backbone)
    _, out = _first_unet_input(method, sample, seed=5)
    timesteps = method.timesteps()
    source = encode_image(backbone, sample.source_image)
    g = torch.Generator().manual_seed(5)
    draws = [torch.randn(source.shape, generator=g) for _ in range(len(timesteps) + 1)]
    expected = method.scheduler.add_noise(source, draws[-1], timesteps[-1:])
    assert np.abs(out.astype(int) - np.asarray(decode_latents(backbone, expected)).astype(int)).max() <= 1
    clean = np.asarray(decode_latents(backbone, source)).astype(int)
    assert np.abs(out.astype(int) - clean).max() > 0  # not the clean source: that is blend="next"


# --------------------------------------------------------------------------------------------------------
# Imagic: optimisation in float32 under a half-precision backbone
# --------------------------------------------------------------------------------------------------------
def test_imagic_optimises_float32_parameters_under_a_half_precision_backbone(monkeypatch) -> None:
    dtypes: list[set[torch.dtype]] = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            params = list(params)
            dtypes.append({p.dtype for p in params})
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    bb = toy_backbone(seed=0, num_inference_steps=2, device="cpu", dtype="bfloat16")
    before = {k: v.clone() for k, v in bb.unet.state_dict().items()}
    method = Imagic(embedding_steps=2, finetune_steps=2, finetune_lr=1e-3)
    method.setup(bb)
    out = method.edit(_sample(), torch.Generator().manual_seed(0))
    assert dtypes == [{torch.float32}, {torch.float32}]  # the embedding, then the UNet copy
    assert np.asarray(out.image).shape == (64, 64, 3) and np.isfinite(out.info["finetune_loss"])
    assert all(torch.equal(before[k], v) and v.dtype == torch.bfloat16 for k, v in bb.unet.state_dict().items())


# --------------------------------------------------------------------------------------------------------
# Paper presets on the SD-1.5-topology backbone (preset sd)
# --------------------------------------------------------------------------------------------------------
SPECIAL_BACKBONES = {"inpaint": "inpaint", "instruct_pix2pix": "ip2p", "instruct": "ip2p",
                     "paint_by_example": "paint_by_example"}
WITH_PRESETS = sorted(n for n in METHODS.names() if "sd" in METHODS.get(n).presets)


@pytest.fixture(scope="module")
def sd15_backbones() -> dict:
    kw = {"device": "cpu", "resolution": 512, "num_inference_steps": 2}
    return {"sd": toy_sd15_backbone(device="cpu"),
            **{v: toy_variant_backbone(v, topology="sd15", preset="sd", **kw) for v in SPECIAL_BACKBONES.values()}}


def test_every_method_and_controlling_editor_has_a_cited_preset() -> None:
    # edit: its parts'; ddim_swap: editor=swap's baseline; outputs: imports edits made elsewhere
    expected = {n for n in METHODS.names() if "sd" in METHODS.get(n).families} - {"edit", "ddim_swap"}
    assert set(WITH_PRESETS) == expected
    for cls in [METHODS.get(n) for n in WITH_PRESETS] + [EDITORS.get("pnp"), EDITORS.get("masactrl")]:
        preset = cls.presets["sd"]
        assert preset.source and preset.settings, cls.__name__


@pytest.mark.parametrize("name", WITH_PRESETS)
def test_method_config_on_the_sd15_toy_runs_the_preset(name: str, sd15_backbones: dict) -> None:
    """``method=<name> backbone=toy_sd15``: every preset setting is applied (none kept, none defaulted)."""
    cfg = compose_cfg([f"method={name}", "backbone=toy_sd15"])
    assert cfg.backbone.preset == "sd"
    method = build(cfg.method)
    method.setup(sd15_backbones[SPECIAL_BACKBONES.get(name, "sd")])
    preset = type(method).presets["sd"]
    record = method.describe()["preset"]
    assert record["preset"] == "sd" and record["source"] == preset.source
    assert record["applied"] == dict(preset.settings) and record["kept"] == []
    assert set(record.get("defaults", {})) <= {"radius", "move_step"} - set(preset.settings)
    assert all(getattr(method, k) == v for k, v in preset.settings.items())


@pytest.mark.parametrize("editor", ["pnp", "masactrl"])
def test_editor_config_on_the_sd15_toy_runs_the_preset(editor: str, sd15_backbones: dict) -> None:
    cfg = compose_cfg(["method=edit", f"editor={editor}", "backbone=toy_sd15"])
    method = build(cfg.method)
    method.setup(sd15_backbones["sd"])
    preset = EDITORS.get(editor).presets["sd"]
    assert method.describe()["preset"]["editor"]["applied"] == dict(preset.settings)
    assert all(getattr(method.editor, k) == v for k, v in preset.settings.items())


def test_small_backbones_keep_their_own_scales(backbone) -> None:
    method = build(compose_cfg(["method=sdedit", "backbone=toy"]).method)
    method.setup(backbone)
    assert method.describe()["preset"]["preset"] is None
    assert (method.guidance_scale, method.num_inference_steps, method.strength) == (
        backbone.guidance_scale, backbone.num_inference_steps, 0.5)
    assert method.describe()["preset"]["defaults"]["guidance_scale"] == backbone.guidance_scale
