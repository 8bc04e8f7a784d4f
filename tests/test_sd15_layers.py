"""Every method and editor runs 2 steps on the toy backbone with SD 1.5's exact UNet topology (preset ``sd``),
and each control touches exactly the layers the official code does.

The layers are chosen by role on the topology, which does not depend on the image size, so the runs of every
method use 256 px (32x32 latents: the same blocks, levels and orders; each UNet call is 16x cheaper in the
finest level's self-attention). At SD's own 512 px (64x64 latents) a 2-step run costs 20 s (MasaCtrl) to 160 s
(LEDITS++, whose pipeline materialises every attention map) on one CPU thread; two runs stay at 512 px: P2P's
local blend, asserting its 16x16 maps, and the runner's record of MasaCtrl's preset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, toy_overrides
from PIL import Image
from test_topology import BLEND_16, MASACTRL, PNP_ATTENTION, PNP_FEATURE

from editlab.methods.blended_latent import BlendedLatentDiffusion
from editlab.methods.diffedit import DiffEdit
from editlab.methods.drag import SDEDrag
from editlab.methods.editors.attention import observe_controls
from editlab.methods.imagic import Imagic
from editlab.methods.inpaint import SDInpaint
from editlab.methods.instruct_pix2pix import InstructPix2Pix
from editlab.methods.inversion_editing import InversionEditing
from editlab.methods.ledits_pp import LEditsPP
from editlab.methods.paint_by_example import PaintByExample
from editlab.methods.sdedit import SDEdit
from editlab.models.topology import sd15_topology
from editlab.models.toy_variants import toy_sd15_backbone, toy_variant_backbone
from editlab.types import Sample

pytestmark = pytest.mark.slow
STEPS = 2
SIZE = 256  # 32x32 latents; SD's 512 px where the resolution itself is asserted


@pytest.fixture(scope="module")
def backbones() -> dict:
    kw = {"device": "cpu", "resolution": SIZE, "num_inference_steps": STEPS, "topology": "sd15", "preset": "sd"}
    return {"sd": toy_sd15_backbone(device="cpu", num_inference_steps=STEPS, resolution=SIZE),
            **{v: toy_variant_backbone(v, **kw) for v in ("inpaint", "ip2p", "paint_by_example")}}


def _sample(size: int = SIZE) -> Sample:
    arr = np.zeros((size, size, 3), np.uint8)
    arr[:] = (40, 160, 40)
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = (220, 30, 30)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    c = 0.4 * size
    return Sample(id="s0", source_image=Image.fromarray(arr), source_prompt="a red square",
                  target_prompt="a blue square", instruction="make the square blue", mask=Image.fromarray(mask),
                  reference_image=Image.fromarray(arr[::-1].copy()), points=[(c, c), (c + 16.0, c)])


def _run(method, backbone, cache_dir: Path | None = None) -> list:
    """Edit once, observing the controls. ``InversionEditing`` parts are given ``STEPS`` explicitly: on a preset-sd
    backbone the inversion's preset would otherwise set SD's 50 steps."""
    method.setup(backbone, cache_dir)
    before = dict(backbone.unet.attn_processors)
    with observe_controls() as controls:
        out = method.edit(_sample(backbone.resolution), torch.Generator().manual_seed(0))
    assert out.image.size == (backbone.resolution, backbone.resolution)
    assert all(backbone.unet.attn_processors[k] is v for k, v in before.items())  # restored
    return controls


def _touched(controls) -> set[str]:
    return {name for control in controls for name in control.touched}


def _self(blocks) -> list[str]:
    return [b.processor(cross=False) for b in blocks]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one inversion per inversion prompt, shared by the editors


def test_masactrl_touches_self_attention_from_block_10(backbones: dict, cache: Path) -> None:
    controls = _run(InversionEditing("ddim", "masactrl", num_inference_steps=STEPS), backbones["sd"], cache)
    assert sorted(_touched(controls)) == sorted(MASACTRL)  # orders 10-15: up_blocks[2:], the decoder's finest levels
    assert all(count == STEPS for count in controls[0].touched.values())  # start_step 4 of 50 -> from step 0 of 2


def test_pnp_touches_the_official_residual_block_and_self_attention(backbones: dict, cache: Path) -> None:
    controls = _run(InversionEditing("ddim", "pnp", num_inference_steps=STEPS), backbones["sd"], cache)
    touched = controls[0].touched
    assert sorted(touched) == sorted(PNP_ATTENTION + [PNP_FEATURE])
    assert touched[PNP_FEATURE] == int(0.8 * STEPS)  # pnp_f_t 0.8, pnp_attn_t 0.5 of the steps
    assert all(touched[name] == int(0.5 * STEPS) for name in PNP_ATTENTION)


def test_p2p_touches_self_attention_up_to_32x32_and_blends_16x16_maps(tmp_path: Path) -> None:
    """At SD's 512 px: self-attention replaced where the maps are at most 32x32 (official ``attn.shape[1] <= 32 **
    2``), the local blend reads the 16x16 cross-attention maps (official ``down_cross[2:4] + up_cross[:3]``)."""
    controls = _run(InversionEditing("ddim", {"name": "p2p", "blend_words": "differing"}, num_inference_steps=STEPS),
                    toy_sd15_backbone(device="cpu", num_inference_steps=STEPS), tmp_path)
    self_32 = _self(b for b in sd15_topology().transformers if b.downscale >= 2)  # 64 / 2 = 32
    cross = [b.processor(cross=True) for b in sd15_topology().transformers]
    # 2 steps: self-attention replaced at step 0 (int(0.6 * 2) = 1 step), cross-attention refined at step 0
    # (official window int(0.4 * (2 + 1)) = 1 step) in every layer; the local blend reads the cross-attention maps at
    # latent / 4 at every step
    touched = controls[0].touched
    assert sorted(touched) == sorted(self_32 + cross)
    assert {name for name, count in touched.items() if count == STEPS} == set(BLEND_16)
    assert all(touched[name] == 1 for name in set(touched) - set(BLEND_16))
    blend = controls[0].blend
    assert blend.maps.shape[1] == 16 * 16 and blend.downscale == 4


def test_pix2pix_zero_reads_every_cross_attention_layer(backbones: dict, cache: Path) -> None:
    controls = _run(InversionEditing("ddim", "pix2pix_zero", num_inference_steps=STEPS), backbones["sd"], cache)
    assert _touched(controls) == {b.processor(cross=True) for b in sd15_topology().transformers}


def test_swap_touches_nothing(backbones: dict, cache: Path) -> None:
    assert _run(InversionEditing("ddim", "swap", num_inference_steps=STEPS), backbones["sd"], cache) == []


def test_ledits_pp_masks_read_the_16x16_maps_of_encoder_and_decoder(backbones: dict, monkeypatch) -> None:
    from diffusers.pipelines.ledits_pp import pipeline_leditspp_stable_diffusion as pipeline

    used = []
    original = pipeline.LeditsAttentionStore.aggregate_attention

    def recording(self, attention_maps, prompts, res, from_where, is_cross, select):
        pixels = math.prod(res) if isinstance(res, tuple | list) else res * res
        used.append((tuple(res) if isinstance(res, tuple | list) else (res, res),
                     sum(1 for where in from_where for maps in attention_maps[f"{where}_cross"]
                         if maps.shape[2] == pixels)))
        return original(self, attention_maps, prompts, res, from_where, is_cross, select)

    monkeypatch.setattr(pipeline.LeditsAttentionStore, "aggregate_attention", recording)
    method = LEditsPP(num_inference_steps=STEPS)
    assert _run(method, backbones["sd"]) == []  # no editlab control: the pipeline's own processors, restored
    assert method.describe()["layers"]["mask_maps"] == BLEND_16
    side = SIZE // 8 // 4  # latent / 4: 16 at SD's 512 px
    assert used and all(entry == ((side, side), len(BLEND_16)) for entry in used)


@pytest.mark.parametrize(("make", "bb"), [
    (lambda: SDEdit(strength=1.0, num_inference_steps=STEPS), "sd"),
    (lambda: DiffEdit(num_maps_per_mask=1, num_inference_steps=STEPS), "sd"),
    (lambda: BlendedLatentDiffusion(strength=1.0, num_inference_steps=STEPS), "sd"),
    (lambda: SDEDrag(num_steps=4), "sd"),
    (lambda: Imagic(embedding_steps=1, finetune_steps=1, num_inference_steps=STEPS), "sd"),
    (lambda: SDInpaint(num_inference_steps=STEPS), "inpaint"),
    (lambda: InstructPix2Pix(num_inference_steps=STEPS), "ip2p"),
    (lambda: PaintByExample(num_inference_steps=STEPS), "paint_by_example"),
], ids=["sdedit", "diffedit", "blended_latent", "drag", "imagic", "inpaint", "instruct_pix2pix", "paint_by_example"])
def test_methods_without_a_layer_control_touch_no_layer(make, bb: str, backbones: dict) -> None:
    assert _run(make(), backbones[bb]) == []


def test_runner_records_the_preset_on_the_sd15_toy(folder_dataset: Path, tmp_path: Path) -> None:
    """``method=edit editor=masactrl backbone=toy_sd15`` runs with the preset's values, recorded in method.json."""
    from editlab.bench.runner import run
    from editlab.registry import EDITORS

    overrides = [o for o in toy_overrides(folder_dataset, tmp_path / "res", "method=edit", "editor=masactrl",
                                          "metrics=none", "dataset.limit=1") if not o.startswith("backbone")]
    outcome = run(compose_cfg(overrides + ["backbone=toy_sd15", f"backbone.resolution={SIZE}"]), show_table=False)
    assert outcome.results["counts"]["ok"] == 1
    record = json.loads((outcome.run_dir / "method.json").read_text())["preset"]["editor"]
    assert record["preset"] == "sd" and record["applied"] == dict(EDITORS.get("masactrl").presets["sd"].settings)
