"""The ShapesWorld flow-matching trainer: a toy run exports a folder that the stock SD3 pipeline and editlab's
loader read (family sd3 from model_index.json), resumes, and trains on exactly the conditioning the pipeline
computes at inference; the velocity target matches the sampler's convention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from editlab import ROOT
from editlab.models.backbone import load_backbone
from editlab.train import flow as F

CLIP = ROOT / "weights" / "shapesworld" / "clip"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flow")
    args = ["--out", str(root / "run"), "--steps", "3", "--batch-size", "4", "--cache-size", "8", "--refresh", "1",
            "--width", "32", "--layers", "1", "--heads", "2", "--threads", "1", "--no-progress", "--device", "cpu",
            "--sd", str(ROOT / "weights" / "shapesworld" / "sd"), "--clip", str(CLIP), "--export", str(root / "export")]
    F.main(args)
    F.main([*args[:3], "5", *args[4:], "--resume"])
    return root


def test_toy_run_resumes_and_exports_an_sd3_folder(trained: Path) -> None:
    from diffusers import StableDiffusion3Pipeline

    log = (trained / "run" / "log.csv").read_text().splitlines()
    assert json.loads((trained / "run" / "summary.json").read_text())["step"] == 5 and log[0].startswith("step")
    export = trained / "export"
    assert (export / "text_encoder_2").is_symlink()
    assert (export / "vae" / "diffusion_pytorch_model.safetensors").is_symlink()
    settings = json.loads((export / "editlab.json").read_text())
    assert settings["pipeline_kwargs"] == {"max_sequence_length": 0} and settings["resolution"] == 64
    pipe = StableDiffusion3Pipeline.from_pretrained(export, text_encoder_3=None, tokenizer_3=None)
    assert pipe.vae.config.shift_factor == 0.0 and pipe.tokenizer.model_max_length == F.TEXT_WINDOW
    image = pipe("a red circle", num_inference_steps=2, max_sequence_length=0, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    bb = load_backbone(str(export), pipeline="auto", family="auto", device="cpu")
    assert bb.family == "sd3" and bb.parts["text_encoder_3"] is None and bb.call_kwargs == {"max_sequence_length": 0}
    assert any("transformer" in str(f) for f in bb.weight_files())


def test_training_conditioning_is_what_the_sd3_pipeline_computes(trained: Path) -> None:
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(trained / "export", text_encoder_3=None, tokenizer_3=None)
    prompts = ["a small red circle at top left on a blue background", ""]
    hidden, pooled = F.encode_text(pipe.text_encoder, pipe.tokenizer, prompts, torch.device("cpu"))
    emb, _, ref_pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                               max_sequence_length=0)
    torch.testing.assert_close(hidden, emb)
    torch.testing.assert_close(pooled, ref_pooled)


def test_text_window_keeps_the_77_token_embeddings() -> None:
    """The CLIP tower is causal: the first 48 positions (and the pooled EOS embedding) of a 48-token window equal
    those of SD's 77-token window for every ShapesWorld prompt length."""
    te, tok = F.clip_text_encoder(CLIP)
    text = ["a large purple square at left and a small yellow cube from above at bottom right on a pink background"]
    short = tok(text, padding="max_length", max_length=48, return_tensors="pt").input_ids
    long = tok(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = te(short, output_hidden_states=True), te(long, output_hidden_states=True)
    torch.testing.assert_close(a.hidden_states[-2], b.hidden_states[-2][:, :48], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.text_embeds, b.text_embeds, atol=1e-5, rtol=1e-5)


def test_velocity_target_matches_the_euler_sampler() -> None:
    """The trained target noise - x0 is the velocity the exported scheduler integrates: one Euler step with it
    moves a point of the straight path x_s = (1 - s) x0 + s noise exactly to the path's next point."""
    sched = F.flow_scheduler()
    sched.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    s, s_next = sched.sigmas[3], sched.sigmas[4]
    x = (1 - s) * x0 + s * noise
    stepped = sched.step(noise - x0, sched.timesteps[3], x).prev_sample
    torch.testing.assert_close(stepped, (1 - s_next) * x0 + s_next * noise)
