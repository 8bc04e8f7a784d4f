"""Editors on toy components: alignment, controls, the inversion x editor pairing and its config wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, toy_overrides, write_folder_dataset
from PIL import Image

from editlab import ROOT
from editlab.bench.runner import build, run
from editlab.methods.editors.p2p import refine_mapper, replace_mapper, word_token_positions, word_weights
from editlab.methods.inversion_editing import InversionEditing
from editlab.models.backbone import toy_backbone
from editlab.registry import EDITORS
from editlab.types import Sample, SampleError

PAIRS = [(i, e) for i in ("ddim", "nti", "npi", "direct", "edict", "ddpm")
         for e in ("p2p", "masactrl", "pnp", "pix2pix_zero")]
FAST_NTI = {"name": "nti", "num_inner_steps": 2}


@pytest.fixture(scope="module")
def backbone():
    return toy_backbone(seed=0, num_inference_steps=3, device="cpu")


def _sample(target: str = "a blue square", source: str = "a red square") -> Sample:
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:] = (40, 160, 40)
    arr[16:48, 16:48] = (220, 30, 30)
    return Sample(id="s0", source_image=Image.fromarray(arr), source_prompt=source, target_prompt=target)


def _edit(backbone, inversion, editor, sample: Sample | None = None, seed: int = 0) -> np.ndarray:
    method = InversionEditing(inversion, editor)
    method.setup(backbone)
    return np.asarray(method.edit(sample or _sample(), torch.Generator().manual_seed(seed)).image).astype(int)


# --------------------------------------------------------------------------------------------------------
# Registry, configs and pairing
# --------------------------------------------------------------------------------------------------------
def test_registry_matches_configs_and_issue_grid_builds() -> None:
    assert EDITORS.names() == sorted(p.stem for p in (ROOT / "configs" / "editor").glob("*.yaml"))
    for inversion, editor in PAIRS:  # the issue's grid: every pair is usable
        method = InversionEditing(inversion, editor)
        assert method.name == f"{editor}+{inversion}"
    for name in EDITORS.names():  # each editor config composes and builds, named after its file
        method = build(compose_cfg([f"editor={name}", "inversion=nti"]).method)
        assert type(method.editor) is EDITORS.get(name) and method.name == f"{name}+nti"


def test_incompatible_pair_rejected_at_config_time() -> None:
    message = (r"editor 'swap' cannot use inversion 'direct': .*source branch.*"
               r"compatible inversions: ddim, ddpm, edict, npi, nti")
    with pytest.raises(ValueError, match=message):
        InversionEditing("direct", "swap")
    with pytest.raises(Exception, match=message):  # through Hydra, as the runner builds it
        build(compose_cfg(["inversion=direct", "editor=swap"]).method)


# --------------------------------------------------------------------------------------------------------
# Properties of the editors
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("inversion", ["ddim", "npi", "nti", "edict", "ddpm"])
def test_p2p_with_identical_prompts_reproduces_reconstruction(backbone, inversion) -> None:
    """(Direct inversion is the exception by design: it corrects the source branch only.)"""
    spec = FAST_NTI if inversion == "nti" else {"name": inversion}
    if inversion == "ddpm":
        spec = {**spec, "source_guidance": backbone.guidance_scale}  # the target runs at the editing scale
    method = InversionEditing(spec, "p2p")
    method.setup(backbone)
    same = _sample(target="a red square")
    rec = np.asarray(method.reconstruct(same), int)
    out = np.asarray(method.edit(same, torch.Generator().manual_seed(0)).image, int)
    assert np.abs(out - rec).max() <= 2  # explicit softmax vs fused attention: rounding only


@pytest.mark.parametrize("editor", ["p2p", "masactrl", "pnp", "pix2pix_zero"])
def test_deterministic_controls_act_and_processors_restored(backbone, editor) -> None:
    before = dict(backbone.unet.attn_processors)
    a = _edit(backbone, "ddim", editor)
    assert all(backbone.unet.attn_processors[k] is v for k, v in before.items())
    np.testing.assert_array_equal(a, _edit(backbone, "ddim", editor))
    assert not np.array_equal(a, _edit(backbone, "ddim", "swap"))  # the control changes the result


@pytest.mark.parametrize("editor", [
    {"name": "masactrl", "start_step": 50, "source_prompt": "source"},  # "empty" inverts with another prompt
    {"name": "pnp", "feature_injection": 0.0, "attention_injection": 0.0},
])
def test_controls_switched_off_reduce_to_prompt_swap(backbone, editor) -> None:
    assert np.abs(_edit(backbone, "ddim", editor) - _edit(backbone, "ddim", "swap")).max() <= 1


def test_pix2pix_zero_without_guidance_is_prompt_swap_with_the_caption_as_negative_prompt(backbone) -> None:
    """Without cross-attention guidance and regularisation Pix2Pix-Zero is the target prompt denoised with the source
    caption as negative prompt: prompt swap after Negative-prompt inversion (same DDIM trajectory)."""
    p2p0 = {"name": "pix2pix_zero", "xa_guidance": 0.0, "noise_regularization": None}
    assert np.abs(_edit(backbone, "ddim", p2p0) - _edit(backbone, "npi", "swap")).max() <= 1
    assert np.abs(_edit(backbone, "ddim", p2p0) - _edit(backbone, "ddim", "swap")).max() > 1  # not the empty prompt


def test_p2p_local_blend_with_empty_mask_keeps_the_source(backbone) -> None:
    editor = {"name": "p2p", "local_blend": True, "blend_words": "differing", "blend_threshold": 1.01,
              "start_blend": 0.0}
    method = InversionEditing("ddim", editor)
    method.setup(backbone)
    out = np.asarray(method.edit(_sample(), torch.Generator()).image, int)
    assert np.abs(out - np.asarray(method.reconstruct(_sample()), int)).max() <= 1
    reweighted = _edit(backbone, "ddim", {"name": "p2p", "reweight": {"blue": 4.0}})
    assert not np.array_equal(reweighted, _edit(backbone, "ddim", "p2p"))
    blended = _edit(backbone, "ddim", {"name": "p2p", "blend_words": "differing"})  # PIE: blend + x2 reweight
    assert not np.array_equal(blended, _edit(backbone, "ddim", "p2p"))


def test_p2p_local_blend_stays_local_on_small_latents() -> None:
    """Blend maps are taken where the 3x3 pooling keeps them local: 2x2 maps of an 8x8-latent backbone would
    mark the whole frame (the blend would change nothing), so its 8x8 maps are used; SD keeps 16x16."""
    from types import SimpleNamespace

    from editlab.methods.editors.p2p import LocalBlend

    alphas = torch.zeros(2, 77)
    alphas[:, 2] = 1.0
    assert LocalBlend(alphas, 4, 0.3, 0.0, latent_side=64).pick_level({1, 2, 4, 8}) == 4
    assert LocalBlend(alphas, 4, 0.3, 0.0, latent_side=32).pick_level({1, 2, 4, 8}) == 4
    assert LocalBlend(alphas, 4, 0.3, 0.0, latent_side=16).pick_level({1, 2, 4, 8}) == 2
    blend = LocalBlend(alphas, 4, 0.3, 0.0, latent_side=8)
    blend.downscale = blend.pick_level({1, 2, 4})
    assert blend.downscale == 1
    probs = torch.full((2, 1, 64, 77), 0.01)
    probs[:, :, 1 * 8 + 1, 2] = 1.0  # the word attends to latent cell (row 1, col 1) only
    blend.store(probs)
    x = torch.stack([torch.zeros(4, 8, 8), torch.ones(4, 8, 8)])
    out = blend(SimpleNamespace(index=0, num_steps=10), x)
    region = out[1, 0] == 1
    assert region[:3, :3].all() and region.sum() == 9  # the cell and its 3x3 neighbourhood take the edit
    assert torch.equal(out[1, :, 5:, 5:], x[0, :, 5:, 5:])  # elsewhere the source is kept


def test_every_inversion_runs_with_an_attention_editor(backbone) -> None:
    for inversion in ("npi", "direct", "edict", "ddpm"):
        out = _edit(backbone, inversion, "p2p", _sample("a blue circle"))
        assert out.shape == (64, 64, 3)


def test_word_alignment_through_the_tokenizer(backbone) -> None:
    tok = backbone.tokenizer
    assert word_token_positions(tok, "a red square") == [[1], [2], [3]]
    assert word_token_positions(tok, "a zzz square") == [[1], [2, 3, 4], [5]]  # unknown word: 3 tokens
    assert word_token_positions(tok, "a red, square") == [[1], [2, 3], [4]]  # get_word_inds: "," belongs to "red,"
    m = replace_mapper(tok, "a red square", "a zzz square")
    # the word spreads over the 3 tokens; after it, source token 3 ("square") goes to target token 5 and the end
    # token 4 to 6 (the official mapper[j, j] = 1 would send source 5 to target 5: documented deviation)
    assert torch.allclose(m[2, 2:5], torch.full((3,), 1 / 3)) and m[3, 5] == 1 and m[4, 6] == 1 and m[5, 5] == 0
    assert torch.allclose(m.sum(1)[:4], torch.ones(4))
    index, alpha = refine_mapper(tok, "a square", "a red square")
    assert alpha[:5].tolist() == [1, 1, 0, 1, 1] and index[3] == 2 and index[4] == 3 and index[10] == 10
    assert word_weights(tok, "a large red square", {"red": 2.0}, default=1.0)[:5].tolist()[3] == 2.0
    with pytest.raises(SampleError, match="same number of words"):
        replace_mapper(tok, "a square", "a red square")


# --------------------------------------------------------------------------------------------------------
# Runner and command line
# --------------------------------------------------------------------------------------------------------
def test_runner_reuses_inversions_across_editors(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    base = toy_overrides(data, tmp_path / "res", "method=edit", "inversion=npi", "metrics=none")
    first = run(compose_cfg(base + ["editor=p2p"]), show_table=False)
    second = run(compose_cfg(base + ["editor=swap"]), show_table=False)
    assert first.run_dir.name.startswith("p2p+npi-") and second.run_dir.name.startswith("swap+npi-")
    recs = [json.loads(line) for line in (second.run_dir / "samples.jsonl").read_text().splitlines()]
    assert [r["info"]["inversion_cached"] for r in recs] == [True, True]
    assert second.results["taxonomy"]["learning_strategy"] == "training- and fine-tuning-free"


def test_cli_multirun_over_inversions_and_editors(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=1, broken=False)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "editlab.bench.cli", "run", "-m", "method=edit", "inversion=ddim,npi",
           "editor=p2p", "backbone=toy", "backbone.num_inference_steps=2", "dataset=folder",
           f"dataset.root={data}", f"results_dir={results}", "device=cpu", "metrics=none", "experiment_name=grid"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent.name.split("-")[0] for p in (results / "grid" / "folder").glob("*/results.json"))
    assert runs == ["p2p+ddim", "p2p+npi"]
    assert len(list((results / "_cache" / "inversions").glob("*.json"))) == 1  # DDIM and NPI share one trajectory
