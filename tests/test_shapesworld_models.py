"""The shipped ShapesWorld models reproduce the figures of their model card (weights/shapesworld/eval/*.json).

Bounded re-measurements on fewer held-out scenes than the card used; each threshold is the card's figure
minus a sampling margin, so a regression of the weights or of the code path that loads them fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "shapesworld"
EVAL = WEIGHTS / "eval"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (WEIGHTS / "sd" / "model_index.json").exists() or not (EVAL / "sd.json").exists(),
        reason="ShapesWorld models not shipped",
    ),
]


def _card(which: str) -> dict:
    return json.loads((EVAL / f"{which}.json").read_text())


def _binomial_floor(p: float, n: int, slack: float = 0.05) -> float:
    """Lowest rate still consistent with a reported rate ``p`` when re-measured on ``n`` draws."""
    return p - 2.5 * np.sqrt(max(p * (1 - p), 1e-4) / n) - slack


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(WEIGHTS / "sd")
    p.set_progress_bar_config(disable=True)
    return p


def test_vae_reconstruction_psnr_matches_card(pipe) -> None:
    from editlab.datasets.shapesworld import world
    from editlab.train import common as C
    from editlab.train.evaluate import held_scenes
    from editlab.train.vae import reconstruct

    imgs = np.stack([world.render(s) for s in held_scenes(32)])
    measured = C.psnr(reconstruct(pipe.vae, imgs, torch.device("cpu")), imgs)
    stated = _card("vae")["psnr_db"]
    assert measured >= stated - 1.0, (measured, stated)


def test_ddim_inversion_reconstructs_within_stated_psnr(pipe) -> None:
    """DDIMInverseScheduler at guidance 1 then DDIM regeneration, 50 steps, against the input image."""
    from editlab.datasets.shapesworld import world
    from editlab.train.evaluate import ddim_inversion_psnr, held_scenes

    scenes = held_scenes(8)
    imgs = np.stack([world.render(s) for s in scenes])
    with torch.no_grad():
        res = ddim_inversion_psnr(pipe, imgs, [world.caption(s) for s in scenes], steps=50)
    stated = _card("sd")["ddim_inversion"]["inversion_reconstruction_psnr_db"]
    assert res["inversion_reconstruction_psnr_db"] >= stated - 1.5, (res, stated)
    # inversion itself loses little on top of the VAE round trip
    assert res["inversion_reconstruction_psnr_db"] >= res["vae_only_psnr_db"] - 1.5, res


def test_text_to_image_satisfies_the_oracle_on_held_out_prompts(pipe) -> None:
    """Held-out captions at the recommended settings: the share of generations whose background, object
    count, colours and shapes the oracle reads back as asked is what the card reports (tolerantly)."""
    from editlab.datasets.shapesworld import oracle, world
    from editlab.train.evaluate import held_scenes

    card = _card("sd")
    settings = json.loads((WEIGHTS / "sd" / "editlab.json").read_text())
    g = float(settings["guidance_scale"])
    reported = card["by_guidance"][str(card["best_guidance_scale"])]
    n = 24
    scenes = held_scenes(n)
    with torch.no_grad():
        imgs = pipe(
            [world.caption(s) for s in scenes],
            guidance_scale=g,
            num_inference_steps=int(settings.get("num_inference_steps", 50)),
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
        ).images
    imgs = (imgs * 255).round().astype(np.uint8)
    checks = [oracle.scene_accuracy(im, s) for im, s in zip(imgs, scenes, strict=True)]
    all_ok = float(np.mean([all(c.values()) for c in checks]))
    background = float(np.mean([c["background"] for c in checks]))
    assert background >= _binomial_floor(reported["scene_checks"]["background"], n), (background, reported)
    assert all_ok >= _binomial_floor(reported["scene_all_correct"], n), (all_ok, reported)
    if reported["scene_all_correct"] >= 0.2:
        assert all_ok > 0, "no held-out prompt satisfied the oracle"
