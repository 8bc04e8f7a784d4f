"""Inversions, their reconstructions and the inversion cache, on toy components (ShapesWorld when present)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from PIL import Image

from editlab import ROOT
from editlab.methods.common import decode_latents, encode_image
from editlab.methods.editors.loop import denoise, reconstruct
from editlab.methods.inversion.base import InversionResult
from editlab.methods.inversion.cache import InversionCache
from editlab.methods.inversion_editing import InversionEditing, build_part
from editlab.models.backbone import toy_backbone
from editlab.registry import INVERSIONS
from editlab.types import LearningStrategy, Sample

SHAPESWORLD = ROOT / "weights" / "shapesworld" / "sd"


@pytest.fixture(scope="module")
def backbone():
    return toy_backbone(seed=0, num_inference_steps=3, guidance_scale=3.0, device="cpu")


def _sample(target: str = "a blue square", source: str = "a red square", sid: str = "s0") -> Sample:
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:] = (40, 160, 40)
    arr[16:48, 16:48] = (220, 30, 30)
    return Sample(id=sid, source_image=Image.fromarray(arr), source_prompt=source, target_prompt=target)


def psnr(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(10 * np.log10(255**2 / max(((a - b) ** 2).mean(), 1e-10)))


def _reconstruction_psnr(backbone, inversion, sample: Sample, reference: Image.Image | None = None) -> float:
    """PSNR of the inversion's reconstruction (source prompt, editing scale) against ``reference``
    (default: the VAE round trip of the source, the best any inversion can do)."""
    method = InversionEditing(inversion, "p2p")
    method.setup(backbone)
    if reference is None:
        reference = decode_latents(backbone, encode_image(backbone, sample.source_image))
    return psnr(method.reconstruct(sample, torch.Generator().manual_seed(0)), reference)


def test_registry_matches_configs() -> None:
    names = sorted(p.stem for p in (ROOT / "configs" / "inversion").glob("*.yaml"))
    assert INVERSIONS.names() == names == ["ddim", "ddpm", "direct", "edict", "npi", "nti"]
    for name in names:
        cfg = compose_cfg([f"inversion={name}"])
        inversion = build_part(INVERSIONS, cfg.inversion)
        assert type(inversion) is INVERSIONS.get(name) and inversion.name == cfg.inversion.name == name
        assert inversion.paper


def test_reconstruction(backbone) -> None:
    """Exact inversions return the source; Null-text and Direct beat DDIM at the editing scale (3.0 here)."""
    sample = _sample()
    exact = {"ddpm": {"name": "ddpm", "zero_last_noise": False}}  # the official zeroed last map is not exact
    scores = {name: _reconstruction_psnr(backbone, exact.get(name, name), sample) for name in INVERSIONS.names()}
    assert scores["direct"] > 80 and scores["edict"] > 60 and scores["ddpm"] > 60, scores
    assert scores["nti"] > scores["ddim"] and scores["direct"] > scores["ddim"] + 20, scores


def test_null_text_lands_on_the_source_latents(backbone) -> None:
    """Per-step null embeddings (each step its own) bring the guided trajectory back to x_0 in latent space."""
    errors = {}
    for name in ("ddim", "nti"):
        method = InversionEditing(name, "p2p")
        method.setup(backbone)
        req, _ = method.request(_sample())
        errors[name] = torch.nn.functional.mse_loss(reconstruct(req), req.result.level(0)).item()
        if name == "nti":
            nulls = req.result.null_embeds
            assert nulls.shape[0] == 3 and not torch.equal(nulls[0], nulls[-1])
    assert errors["nti"] < 0.9 * errors["ddim"], errors  # random toy weights: the null embedding has little pull


def test_negative_prompt_inversion_is_ddim_at_guidance_one(backbone) -> None:
    """With the source prompt as null embedding the guided source branch is the conditional one at any scale."""
    sample = _sample()
    npi = InversionEditing("npi", "swap")
    npi.setup(backbone)
    ddim1 = InversionEditing("ddim", "swap", guidance_scale=1.0)
    ddim1.setup(backbone)
    a = np.asarray(npi.reconstruct(sample), int)
    b = np.asarray(ddim1.reconstruct(sample), int)
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize("fp64", [False, True])
def test_edict_roundtrip_in_latent_space(backbone, fp64: bool) -> None:
    method = InversionEditing({"name": "edict", "strength": 1.0, "fp64": fp64}, "swap")
    method.setup(backbone)
    req, _ = method.request(_sample())
    out = denoise(req, req.source_embeds, [req.source_guidance()], source=0)
    err = (out.double() - req.result.level(0).double()).abs().max().item()
    assert err < (1e-9 if fp64 else 1e-3), err
    assert req.result.coupled is not None and req.result.guidance_locked


def test_ddpm_noise_maps_follow_the_seed(backbone) -> None:
    method = InversionEditing("ddpm", "swap", cache=False)
    method.setup(backbone)
    r0, _ = method.invert(_sample(), method.request(_sample())[0].source_embeds, torch.Generator().manual_seed(0))
    r0b, _ = method.invert(_sample(), method.request(_sample())[0].source_embeds, torch.Generator().manual_seed(0))
    r1, _ = method.invert(_sample(), method.request(_sample())[0].source_embeds, torch.Generator().manual_seed(1))
    assert r0.start_step == round(0.36 * 3) and r0.noise_maps.shape[0] == 3
    assert torch.equal(r0.noise_maps, r0b.noise_maps) and not torch.equal(r0.noise_maps, r1.noise_maps)


def test_null_text_taxonomy_and_settings() -> None:
    method = InversionEditing("nti", "p2p")
    assert method.name == "p2p+nti"
    assert method.taxonomy.learning_strategy is LearningStrategy.TESTING_TIME_FINETUNING
    assert InversionEditing("npi", "p2p").taxonomy.learning_strategy is LearningStrategy.TRAINING_FREE
    assert InversionEditing.taxonomy.learning_strategy is LearningStrategy.TRAINING_FREE  # the class: the family
    nti = method.inversion
    assert (nti.num_inner_steps, nti.learning_rate, nti.early_stop_epsilon) == (10, 1e-2, 1e-5)
    with pytest.raises(ValueError, match="num_inner_steps"):
        INVERSIONS.get("nti")(num_inner_steps=0)


# --------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------
def test_cache_reused_across_editors_targets_and_runs(backbone, tmp_path: Path) -> None:
    cache_dir = tmp_path / "_cache"
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    first = InversionEditing({"name": "nti", "num_inner_steps": 2}, "p2p")
    first.setup(backbone, cache_dir=cache_dir)
    out1 = first.edit(_sample(), gen())
    assert out1.info["inversion_cached"] is False
    assert len(list((cache_dir / "inversions").glob("*.safetensors"))) == 2  # the DDIM trajectory, the null embeddings
    # another target prompt of the same source, then another editor: both reuse it
    assert first.edit(_sample("a green square"), gen()).info["inversion_cached"] is True
    other = InversionEditing({"name": "nti", "num_inner_steps": 2}, "swap")
    other.setup(backbone, cache_dir=cache_dir)  # a new process would start here: only the disk is shared
    assert other.edit(_sample(), gen()).info["inversion_cached"] is True
    # a resumed run reads it from disk and reproduces the edit exactly
    again = InversionEditing({"name": "nti", "num_inner_steps": 2}, "p2p")
    again.setup(backbone, cache_dir=cache_dir)
    out2 = again.edit(_sample(), gen())
    assert out2.info["inversion_cached"] is True
    np.testing.assert_array_equal(np.asarray(out1.image), np.asarray(out2.image))
    metas = [json.loads(p.read_text()) for p in (cache_dir / "inversions").glob("*.json")]
    assert sorted(m["fields"].get("inversion", m["fields"].get("kind")) for m in metas) == ["ddim_trajectory", "nti"]
    assert all(m["fields"]["source_prompt"] == "a red square" for m in metas)


def test_cache_key_covers_what_changes_the_inversion(backbone) -> None:
    method = InversionEditing("nti", "p2p")
    method.setup(backbone)
    base = method.cache_fields(_sample(), 3, 3.0, seed=0)
    key = InversionCache.key
    assert key(base) == key(method.cache_fields(_sample("another target"), 3, 3.0, seed=5))  # target, seed: same
    for changed in (
        method.cache_fields(_sample(source="a blue square"), 3, 3.0, 0),
        method.cache_fields(_sample(), 4, 3.0, 0),
        method.cache_fields(_sample(), 3, 2.0, 0),  # Null-text optimises for the editing scale
        {**base, "settings": {**base["settings"], "num_inner_steps": 3}},
        {**base, "dtype": "torch.float16"},
    ):
        assert key(changed) != key(base)
    ddim = InversionEditing("ddim", "p2p")
    ddim.setup(backbone)
    assert key(ddim.cache_fields(_sample(), 3, 3.0, 0)) == key(ddim.cache_fields(_sample(), 3, 7.5, 0))
    ddpm = InversionEditing("ddpm", "p2p")
    ddpm.setup(backbone)
    assert key(ddpm.cache_fields(_sample(), 3, 3.0, 0)) != key(ddpm.cache_fields(_sample(), 3, 3.0, 1))
    other = toy_backbone(seed=1, num_inference_steps=3, device="cpu")
    method.setup(other)
    assert method.cache_fields(_sample(), 3, 3.0, 0)["backbone"] != base["backbone"]


def test_cache_survives_corrupt_files(backbone, tmp_path: Path) -> None:
    cache = InversionCache(tmp_path, memory_items=0)
    result = InversionResult(latents=torch.randn(4, 4, 8, 8), num_inference_steps=3, null_embeds=torch.randn(1, 77, 32),
                             info={"final_loss": 0.5})
    cache.put("k", result, {"x": 1})
    back = cache.get("k", torch.device("cpu"))
    assert torch.equal(back.latents, result.latents) and torch.equal(back.null_embeds, result.null_embeds)
    assert back.info == {"final_loss": 0.5} and back.noise_maps is None
    (tmp_path / "k.safetensors").write_bytes(b"\x00" * 10)
    assert cache.get("k", torch.device("cpu")) is None  # recomputed, not crashed


# --------------------------------------------------------------------------------------------------------
# The shipped ShapesWorld backbone
# --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not (SHAPESWORLD / "model_index.json").exists(), reason="ShapesWorld backbone not trained yet")
def test_shapesworld_reconstruction_psnr() -> None:
    """Reconstruction PSNR (vs the source image) per inversion at the backbone's recommended scale."""
    from editlab.datasets.shapesworld import ShapesWorldDataset
    from editlab.models.backbone import load_backbone

    backbone = load_backbone(str(SHAPESWORLD), device="cpu", num_inference_steps=10)
    dataset = ShapesWorldDataset(split="test", task_types=["color_change", "object_replacement"], per_task=1)
    samples = [dataset.load(i) for i in dataset.ids()]
    scores: dict[str, float] = {}
    for name in INVERSIONS.names():
        vals = [_reconstruction_psnr(backbone, name, s, reference=s.source_image) for s in samples]
        scores[name] = float(np.mean(vals))
    print("ShapesWorld reconstruction PSNR (dB):", {k: round(v, 2) for k, v in scores.items()})
    assert scores["nti"] > scores["ddim"] and scores["direct"] > scores["ddim"], scores

