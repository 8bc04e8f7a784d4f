"""FlowEdit and RF-Inversion on toy SD3 and FLUX components: properties of the official algorithms that fail when
the implementation drifts, the presets, the family check, and end-to-end runs in the grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_folder_dataset
from PIL import Image

from editlab.bench.runner import run
from editlab.methods.base import UnsupportedBackbone
from editlab.methods.flowedit import FlowEdit
from editlab.methods.rf_inversion import RFInversion
from editlab.models.toy_families import toy_family_backbone
from editlab.types import Sample

FLOW = ["sd3", "flux"]


@pytest.fixture(scope="module", params=FLOW)
def backbone(request):
    return toy_family_backbone(request.param, device="cpu", num_inference_steps=6)


def _sample(source: str = "a red square", target: str = "a blue circle") -> Sample:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:] = (30, 120, 200)
    img[16:40, 20:44] = (220, 40, 40)
    return Sample(id="s", source_image=Image.fromarray(img), source_prompt=source, target_prompt=target)


def _arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.int16)


def _setup(method, backbone):
    method.setup(backbone)
    return method


def _round_trip(method, sample: Sample) -> np.ndarray:
    return _arr(method.model.decode(method.model.encode_image(sample.source_image)))


# --------------------------------------------------------------------------------------------------------
# FlowEdit
# --------------------------------------------------------------------------------------------------------
def test_flowedit_identical_prompts_return_the_source(backbone) -> None:
    """Equal prompts and guidance scales: the two velocities coincide at the same noisy point, so the edit never
    moves and the output is the VAE round trip of the source (official FlowEdit_utils.py update rule)."""
    m = _setup(FlowEdit(n_max=6, src_guidance_scale=2.0, tar_guidance_scale=2.0), backbone)
    s = _sample("a red square", "a red square")
    out = _arr(m.edit(s, torch.Generator().manual_seed(0)).image)
    assert np.abs(out - _round_trip(m, s)).max() <= 1
    # ... and with different prompts it does move (the property above could fail)
    edited = _arr(m.edit(_sample(), torch.Generator().manual_seed(0)).image)
    assert np.abs(edited - _round_trip(m, s)).max() >= 4


def test_flowedit_n_max_zero_takes_no_step_and_n_min_samples(backbone) -> None:
    s = _sample()
    m = _setup(FlowEdit(n_max=0), backbone)
    np.testing.assert_array_equal(_arr(m.edit(s, torch.Generator().manual_seed(0)).image), _round_trip(m, s))
    # n_min > 0 runs the last steps as plain sampling (the branch the official SD3 function cannot run)
    out = _setup(FlowEdit(n_max=4, n_min=2), backbone).edit(s, torch.Generator().manual_seed(0))
    assert out.image.size == (64, 64) and np.isfinite(_arr(out.image)).all()


def test_flowedit_noise_comes_from_the_sample_generator(backbone) -> None:
    m = _setup(FlowEdit(n_max=4, n_avg=2), backbone)
    a = _arr(m.edit(_sample(), torch.Generator().manual_seed(1)).image)
    b = _arr(m.edit(_sample(), torch.Generator().manual_seed(1)).image)
    c = _arr(m.edit(_sample(), torch.Generator().manual_seed(2)).image)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_flowedit_presets_and_fallbacks() -> None:
    bb = toy_family_backbone("sd3", device="cpu", preset="sd3")
    m = _setup(FlowEdit(tar_guidance_scale=9.0), bb)
    assert (m.num_inference_steps, m.n_max, m.n_min, m.n_avg, m.src_guidance_scale) == (50, 33, 0, 1, 3.5)
    assert m.tar_guidance_scale == 9.0 and m.preset_record["kept"] == ["tar_guidance_scale"]
    assert "SD3_exp.yaml" in m.preset_record["source"]
    flux = _setup(FlowEdit(), toy_family_backbone("flux", device="cpu", preset="flux"))
    assert (flux.num_inference_steps, flux.n_max, flux.src_guidance_scale, flux.tar_guidance_scale) == (28, 24, 1.5,
                                                                                                        5.5)
    plain = _setup(FlowEdit(), toy_family_backbone("sd3", device="cpu", num_inference_steps=10))
    assert (plain.n_max, plain.src_guidance_scale, plain.tar_guidance_scale) == (7, 1.5, 7.0)
    with pytest.raises(ValueError, match="n_min <= n_max"):
        _setup(FlowEdit(n_max=3, n_min=4), toy_family_backbone("sd3", device="cpu"))


# --------------------------------------------------------------------------------------------------------
# RF-Inversion
# --------------------------------------------------------------------------------------------------------
def test_rf_inversion_without_controller_is_plain_sampling(backbone) -> None:
    """eta = 0: the controlled reverse ODE is the Euler sampler, so editing equals diffusers' own text-to-image
    pipeline started from the inverted latents (an independent reference: FluxPipeline / StableDiffusion3Pipeline)."""
    steps, guidance = 6, 3.0
    m = _setup(RFInversion(eta=0.0, num_inference_steps=steps, guidance_scale=guidance), backbone)
    s = _sample()
    ours = _arr(m.edit(s, torch.Generator().manual_seed(0)).image)
    gen = torch.Generator().manual_seed(0)  # the same draws as edit(): the posterior sample, then y_1
    latents = m.invert(m.model.encode_image(s.source_image, gen, sample=True).float(), "", gen)
    pipe = m.model.pipe
    if backbone.family == "flux":
        b, c, h, w = latents.shape
        ref = pipe(s.target_prompt, latents=pipe._pack_latents(latents, b, c, h, w), height=64, width=64,
                   num_inference_steps=steps, guidance_scale=guidance).images[0]
    else:
        ref = pipe(s.target_prompt, latents=latents, height=64, width=64, num_inference_steps=steps,
                   guidance_scale=guidance).images[0]
    assert np.abs(ours - _arr(ref)).max() <= 1


def test_rf_inversion_controller_pulls_towards_the_source(backbone) -> None:
    """With the controller on for the whole run (eta = 1, the update is the straight path to y_0 at every step), the
    edit returns the source's latents: the VAE round trip."""
    m = _setup(RFInversion(eta=1.0, start_timestep=0.0, stop_timestep=1.0), backbone)
    s = _sample()
    out = _arr(m.edit(s, torch.Generator().manual_seed(0)).image)
    gen = torch.Generator().manual_seed(0)
    y0 = m.model.encode_image(s.source_image, gen, sample=True)
    assert np.abs(out - _arr(m.model.decode(y0))).max() <= 2


def test_rf_inversion_options() -> None:
    bb = toy_family_backbone("flux", device="cpu", preset="flux")
    m = _setup(RFInversion(), bb)
    assert (m.num_inference_steps, m.gamma, m.eta, m.stop_timestep, m.guidance_scale) == (28, 0.5, 0.9, 0.25, 3.5)
    s = _sample()
    a = _setup(RFInversion(num_inference_steps=4), toy_family_backbone("flux", device="cpu"))
    b = _setup(RFInversion(num_inference_steps=4, inversion_grid="consistent"), toy_family_backbone("flux",
                                                                                                      device="cpu"))
    ea, eb = (_arr(x.edit(s, torch.Generator().manual_seed(0)).image) for x in (a, b))
    assert np.abs(ea - eb).max() > 0  # the two grids differ on a shifted schedule
    with pytest.raises(ValueError, match="available: official, consistent"):
        RFInversion(inversion_grid="paper")
    with pytest.raises(ValueError, match="'empty'"):
        RFInversion(source_prompt="caption")


# --------------------------------------------------------------------------------------------------------
# Families and the grid
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FlowEdit, RFInversion])
def test_flow_editors_refuse_other_families(cls) -> None:
    with pytest.raises(UnsupportedBackbone, match="families that work: sd3, flux"):
        cls().check_family("sd")
    with pytest.raises(UnsupportedBackbone, match="'flux-kontext'"):
        cls().setup(toy_family_backbone("flux-kontext", device="cpu"))


@pytest.mark.parametrize("method", ["flowedit", "rf_inversion"])
@pytest.mark.parametrize("backbone_name", ["toy_sd3", "toy_flux"])
def test_flow_editors_run_in_the_grid(tmp_path: Path, method: str, backbone_name: str) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    cfg = compose_cfg([f"method={method}", f"backbone={backbone_name}", "dataset=folder", f"dataset.root={data}",
                       f"results_dir={tmp_path / 'res'}", "device=cpu", "metrics=none"])
    out = run(cfg, show_table=False)
    recs = [json.loads(line) for line in (out.run_dir / "samples.jsonl").read_text().splitlines()]
    assert [r["status"] for r in recs] == ["ok", "ok"], recs
    assert recs[0]["info"]["working_size"] == [64, 64] and recs[0]["wall_time_s"] > 0
    setup = json.loads((out.run_dir / "method.json").read_text())
    assert setup["name"] == method and setup["resolved"]["num_inference_steps"] == 4


def test_flow_editor_refused_on_the_sd_backbone_in_the_grid(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=1, broken=False)
    cfg = compose_cfg(["method=flowedit", "backbone=shapesworld", "dataset=folder", f"dataset.root={data}",
                       f"results_dir={tmp_path / 'res'}", "device=cpu", "metrics=none"])
    out = run(cfg, show_table=False)
    assert "families that work: sd3, flux" in out.results["setup_error"] and out.edited == 0
