"""Backbone families: family from model_index.json, pipelines per task built from a Backbone, guidance kinds,
resolution policies, speed switches, and the pipeline methods (instruct, sdedit, inpaint) run end to end
in the grid on toy components of every family (real diffusers / transformers classes at toy size, random weights)."""

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
from editlab.models import backbone as B
from editlab.models.families import (
    FAMILIES,
    UnknownFamily,
    UnsupportedTask,
    build_pipeline,
    config_family,
    guidance_kwargs,
    pipeline_class,
    preferred_size,
)
from editlab.models.speed import normalize_speed
from editlab.models.toy_families import toy_family_backbone
from editlab.types import Sample


def _grid(tmp_path: Path, backbone: str, method: str, *extra: str, n: int = 2):
    data = write_folder_dataset(tmp_path / "data", n_good=n, broken=False)
    cfg = compose_cfg([f"method={method}", f"backbone={backbone}", "dataset=folder", f"dataset.root={data}",
                       f"results_dir={tmp_path / 'res'}", "device=cpu", "metrics=none", *extra])
    out = run(cfg, show_table=False)
    recs = [json.loads(line) for line in (out.run_dir / "samples.jsonl").read_text().splitlines()]
    return out, recs


def _sample(size: int = 64) -> Sample:
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (30, 120, 200)
    img[16:40, 20:44] = (220, 40, 40)
    mask = np.zeros((size, size), np.uint8)
    mask[14:42, 18:46] = 255
    return Sample(id="s", source_image=Image.fromarray(img), source_prompt="a red square",
                  target_prompt="a blue square", instruction="make the square blue", mask=Image.fromarray(mask))


# --------------------------------------------------------------------------------------------------------
# Family resolution
# --------------------------------------------------------------------------------------------------------
def test_family_is_read_from_model_index(tmp_path: Path) -> None:
    for cls, family in (("FluxKontextPipeline", "flux-kontext"), ("QwenImageEditPlusPipeline", "qwen-image-edit-plus"),
                        ("StableDiffusion3Pipeline", "sd3"), ("StableDiffusionXLPipeline", "sdxl")):
        folder = tmp_path / cls
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": cls}))
        assert config_family({"family": "auto", "pretrained": str(folder)}) == family
        assert config_family({"pipeline": "auto", "pretrained": str(folder)}) == family
    assert config_family({"family": "auto", "pretrained": "weights/shapesworld/sd"}) == "sd"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "model_index.json").write_text(json.dumps({"_class_name": "WuerstchenPipeline"}))
    with pytest.raises(UnknownFamily, match="set backbone.family explicitly"):
        config_family({"family": "auto", "pretrained": str(tmp_path / "odd")})
    with pytest.raises(UnknownFamily, match="available: sd, sdxl, sd3, flux"):
        config_family({"family": "sd4"})
    # configs without a family keep meaning SD (the toy and the methods' own SD backbones)
    assert config_family({"_target_": "editlab.models.backbone.toy_backbone"}) == "sd"
    assert config_family({"pretrained": "x", "pipeline": "StableDiffusionInpaintPipeline"}) == "sd"


def test_every_family_has_pipelines_that_exist_and_tasks_are_checked() -> None:
    import diffusers

    for fam in FAMILIES.values():
        assert fam.pipelines and fam.guidance in ("cfg", "distilled", "true_cfg") and fam.hub_ids
        for cls in fam.pipelines.values():
            assert hasattr(diffusers, cls), cls
    assert pipeline_class("flux", "inpaint").__name__ == "FluxInpaintPipeline"
    with pytest.raises(UnsupportedTask, match="families with one: sd, sdxl, flux-kontext, qwen-image-edit"):
        pipeline_class("sd3", "instruct")


def test_guidance_kinds_and_preferred_sizes() -> None:
    bb = type("BB", (), {"family": "qwen-image-edit"})()
    assert guidance_kwargs(bb, 4.0) == {"true_cfg_scale": 4.0, "negative_prompt": " "}
    bb.family = "flux-kontext"
    assert guidance_kwargs(bb, 2.5) == {"guidance_scale": 2.5}
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    assert preferred_size("flux-kontext", 64, 64) == (1024, 1024)
    assert preferred_size("flux-kontext", 600, 400) in PREFERRED_KONTEXT_RESOLUTIONS
    w, h = preferred_size("qwen-image-edit", 640, 480)
    assert w % 32 == 0 and h % 32 == 0 and abs(w * h - 1024**2) < 0.05 * 1024**2 and w > h
    assert preferred_size("sdxl", 640, 480) == (640, 480)


# --------------------------------------------------------------------------------------------------------
# Backbones of any pipeline
# --------------------------------------------------------------------------------------------------------
def test_saved_flux_folder_loads_with_family_auto(tmp_path: Path) -> None:
    """A diffusers folder of another family loads by `pipeline: auto` / `family: auto`: components under their
    pipeline names, weight files and parameter count kept, and the family's other pipelines build from it."""
    from diffusers import FluxPipeline

    toy = toy_family_backbone("flux", device="cpu")
    FluxPipeline(**{k: v for k, v in toy.components().items()}).save_pretrained(tmp_path / "flux")
    bb = B.load_backbone(str(tmp_path / "flux"), pipeline="auto", family="auto", device="cpu", resolution=64)
    assert bb.family == "flux" and bb.pipeline_class == "FluxPipeline" and bb.unet is None
    assert {"transformer", "text_encoder_2", "tokenizer_2"} <= set(bb.parts)
    assert bb.num_parameters() == toy.num_parameters() > 0
    assert any(f.name == "diffusion_pytorch_model.safetensors" for f in bb.weight_files())
    assert (bb.guidance_scale, bb.num_inference_steps) == (3.5, 28)  # the family's recommended
    desc = bb.describe()
    assert desc["family"] == "flux" and desc["denoiser"] == "FluxTransformer2DModel"
    assert desc["speed"] == {"attention_backend": None, "compile": "none", "offload": "none", "cache": None,
                             "dtype": "float32"}
    pipe = build_pipeline(bb, "img2img")
    assert type(pipe).__name__ == "FluxImg2ImgPipeline" and pipe.transformer is bb.transformer


def test_pipeline_names_missing_components_and_unknown_overrides() -> None:
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline

    flux = toy_family_backbone("flux", device="cpu")
    with pytest.raises(ValueError, match="needs component.*text_encoder_3"):
        flux.pipeline(StableDiffusion3Pipeline)
    with pytest.raises(TypeError, match="takes no component"):
        flux.pipeline(StableDiffusionPipeline, not_a_component=1)


def test_sd_backbones_are_unchanged() -> None:
    """The SD path keeps its five components; the shipped folder loads the same with `pipeline: auto`."""
    a = B.load_backbone("weights/shapesworld/sd", device="cpu")
    b = B.load_backbone("weights/shapesworld/sd", pipeline="auto", family="auto", device="cpu")
    assert set(a.components()) == {"vae", "text_encoder", "tokenizer", "unet", "scheduler"} == set(b.components())
    assert a.parts == {} and b.family == "sd" and a.num_parameters() == b.num_parameters()
    assert (a.guidance_scale, a.num_inference_steps, a.resolution) == (b.guidance_scale, b.num_inference_steps, 64)


# --------------------------------------------------------------------------------------------------------
# Speed switches
# --------------------------------------------------------------------------------------------------------
def test_speed_settings_are_validated() -> None:
    assert normalize_speed(None) == {"attention_backend": None, "compile": "none", "offload": "none", "cache": None}
    with pytest.raises(ValueError, match="available: none, regional, full"):
        normalize_speed({"compile": "max"})
    with pytest.raises(ValueError, match="unknown speed setting"):
        normalize_speed({"turbo": True})
    with pytest.raises(ValueError, match="available: .*native, _native_cudnn"):
        normalize_speed({"attention_backend": "warp"})
    with pytest.raises(ValueError, match="runs on the CPU"):
        toy_family_backbone("flux", device="cpu", speed={"offload": "model"})
    with pytest.raises(ValueError, match="CacheMixin"):
        toy_family_backbone("sd3", device="cpu", speed={"cache": {"type": "first_block"}})
    with pytest.raises(ValueError, match="repeated blocks"):
        toy_family_backbone("sd3", device="cpu", speed={"compile": "regional"})


def test_first_block_cache_and_attention_backend_are_applied_and_recorded() -> None:
    """The cache hook is on the transformer and recorded; a threshold of 0 never skips a block, so the output equals
    the uncached one; the `native` attention backend is torch SDPA, diffusers' default, so it equals it too."""
    from editlab.methods.instruct import Instruct

    def edit(speed):
        bb = toy_family_backbone("flux-kontext", device="cpu", speed=speed)
        method = Instruct()
        method.setup(bb)
        return bb, np.asarray(method.edit(_sample(), torch.Generator().manual_seed(0)).image, np.int16)

    _, plain = edit(None)
    bb, cached = edit({"cache": {"type": "first_block", "threshold": 0.0}})
    assert bb.transformer.is_cache_enabled and bb.describe()["speed"]["cache"] == {"type": "first_block",
                                                                                   "threshold": 0.0}
    assert np.abs(cached - plain).max() <= 1
    bb, native = edit({"attention_backend": "native"})
    assert bb.describe()["speed"]["attention_backend"] == "native" and np.abs(native - plain).max() <= 1


# --------------------------------------------------------------------------------------------------------
# instruct: every instruction family end to end in the grid
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["toy_sdxl_ip2p", "toy_flux_kontext"])
def test_instruct_runs_in_the_grid(tmp_path: Path, backbone: str) -> None:
    out, recs = _grid(tmp_path, backbone, "instruct", "method.backbone=null")
    assert [r["status"] for r in recs] == ["ok", "ok"], recs
    info = recs[0]["info"]
    assert info["working_size"] == [64, 64] and info["resized_to_input"] is False
    assert info["guidance"] == ("cfg" if "sdxl" in backbone else "distilled")
    saved = json.loads((out.run_dir / "backbone.json").read_text())
    assert saved["family"] == ("sdxl" if "sdxl" in backbone else "flux-kontext") and "speed" in saved


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["toy_qwen_image_edit", "toy_qwen_image_edit_plus"])
def test_instruct_runs_qwen_image_edit(tmp_path: Path, backbone: str) -> None:
    """Qwen-Image-Edit's pipelines encode the source at about 1024x1024 whatever its size (recorded)."""
    _, recs = _grid(tmp_path, backbone, "instruct", "method.backbone=null", "backbone.num_inference_steps=2", n=1)
    assert recs[0]["status"] == "ok", recs
    assert recs[0]["info"]["guidance"] == "true_cfg" and recs[0]["info"]["source_encoded_at"] == [1024, 1024]


@pytest.mark.slow
def test_kontext_preferred_area_is_recorded_and_resized_back() -> None:
    """With the family's policy (`preferred_area`), Kontext works at 1024x1024 for a square input; the output is
    resized back to the input's size and both sizes are recorded."""
    from editlab.methods.instruct import Instruct

    bb = toy_family_backbone("flux-kontext", device="cpu", num_inference_steps=1, resolution_policy="preferred_area")
    method = Instruct()
    method.setup(bb)
    out = method.edit(_sample(), torch.Generator().manual_seed(0))
    assert out.image.size == (64, 64)
    assert out.info["working_size"] == [1024, 1024] == out.info["output_size"] and out.info["resized_to_input"]


def test_instruct_on_sd_equals_instruct_pix2pix() -> None:
    """On an SD InstructPix2Pix UNet, `instruct` is the same computation as `instruct_pix2pix`."""
    from editlab.methods.instruct import Instruct
    from editlab.methods.instruct_pix2pix import InstructPix2Pix
    from editlab.models.toy_variants import toy_variant_backbone

    bb = toy_variant_backbone("ip2p", device="cpu", num_inference_steps=3)
    outs = []
    for method in (Instruct(), InstructPix2Pix()):
        method.setup(bb)
        outs.append(np.asarray(method.edit(_sample(), torch.Generator().manual_seed(3)).image))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_instruct_refuses_other_families_before_loading(tmp_path: Path, monkeypatch) -> None:
    """A method/backbone family mismatch is refused before any weight loads, listing the families that work."""
    def never(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(B, "backbone_from_config", never)
    out, recs = _grid(tmp_path, "sd3", "instruct", "method.backbone=null")
    assert "does not support backbone family 'sd3'" in out.results["setup_error"]
    assert "sd, sdxl, flux-kontext, qwen-image-edit, qwen-image-edit-plus" in out.results["setup_error"]
    with pytest.raises(UnsupportedBackbone):
        from editlab.methods.instruct import Instruct

        Instruct().check_family("flux")


# --------------------------------------------------------------------------------------------------------
# sdedit / inpaint across families: their pipelines come from the family resolver
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["toy_sdxl", "toy_sd3", "toy_flux"])
def test_sdedit_across_families(tmp_path: Path, backbone: str) -> None:
    out, recs = _grid(tmp_path, backbone, "sdedit")
    assert out.results["setup_error"] is None, out.results["setup_error"]
    assert [r["status"] for r in recs] == ["ok", "ok"], recs


@pytest.mark.parametrize("backbone", ["toy_sdxl_inpaint", "toy_sd3", "toy_flux", "toy_flux_fill"])
def test_inpaint_across_families(tmp_path: Path, backbone: str) -> None:
    out, recs = _grid(tmp_path, backbone, "inpaint", "method.backbone=null")
    assert out.results["setup_error"] is None, out.results["setup_error"]
    assert [r["status"] for r in recs] == ["ok", "ok"], recs


def test_sdedit_on_sd_is_the_sd_img2img_pipeline() -> None:
    """Through the resolver, `sdedit` on an SD backbone is still diffusers' StableDiffusionImg2ImgPipeline, with
    the same output as calling that pipeline directly."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from editlab.methods.sdedit import SDEdit
    from editlab.models.backbone import toy_backbone

    bb = toy_backbone(device="cpu", num_inference_steps=4)
    method = SDEdit(strength=0.75)
    method.setup(bb)
    assert type(method.pipe) is StableDiffusionImg2ImgPipeline
    sample = _sample()
    ours = np.asarray(method.edit(sample, torch.Generator().manual_seed(1)).image)
    direct = bb.pipeline(StableDiffusionImg2ImgPipeline)(
        prompt=sample.target_prompt, image=sample.source_image, strength=0.75, num_inference_steps=4,
        guidance_scale=bb.guidance_scale, generator=torch.Generator().manual_seed(1)).images[0]
    np.testing.assert_array_equal(ours, np.asarray(direct))


def test_sdedit_and_inpaint_refusals_on_flow_backbones() -> None:
    """DDIM has no meaning for a flow; SD3 inpainting needs SD3's 16 latent channels. Both are refused at set-up."""
    from editlab.methods.inpaint import SDInpaint
    from editlab.methods.sdedit import SDEdit
    from editlab.models.backbone import load_backbone

    with pytest.raises(ValueError, match="scheduler='ddim' needs a diffusion UNet"):
        SDEdit(scheduler="ddim").setup(toy_family_backbone("sd3", device="cpu"))
    flow = load_backbone("weights/shapesworld/flow", device="cpu", pipeline="StableDiffusion3Pipeline", family="sd3")
    with pytest.raises(ValueError, match="16 or 33 input channels"):
        SDInpaint().setup(flow)


@pytest.mark.slow
def test_sdedit_runs_sd3_img2img_on_the_shipped_flow_model(tmp_path: Path) -> None:
    """`sdedit backbone=shapesworld_flow`: SD3's image-to-image pipeline on editlab's flow model, strength 0.5:
    the output stays close to the source (the flow ODE inverts to 30 dB on this model) but is not the source."""
    out, recs = _grid(tmp_path, "shapesworld_flow", "sdedit", n=1)
    assert out.results["setup_error"] is None and recs[0]["status"] == "ok", recs
    edited = np.asarray(Image.open(out.run_dir / recs[0]["image"]).convert("RGB"), dtype=float)
    source = np.asarray(Image.open(tmp_path / "data" / "img0.png").convert("RGB"), dtype=float)
    assert edited.shape == source.shape
    assert 0 < np.abs(edited - source).mean() < 60
