"""Trainers at toy size: a few steps, checkpoint + resume, export loadable by the stock pipeline classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    StableDiffusionInpaintPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
)
from PIL import Image  # noqa: E402

from editlab.train import common, inpaint, ip2p, sd, vae  # noqa: E402

COMMON = ["--device", "cpu", "--threads", "1", "--no-progress", "--batch-size", "2", "--seed", "0"]
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "shapesworld"


def _step(run: Path) -> int:
    return int(common.load_checkpoint(run / common.CHECKPOINT)["step"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny VAE and text-to-image pipeline, trained for 3 steps with one resume in between."""
    root = tmp_path_factory.mktemp("train")
    export = root / "sd"
    vae_args = [
        "--out",
        str(root / "vae"),
        "--channels",
        "8,8,8,8",
        "--groups",
        "4",
        "--data",
        "shapes",
        "--eval-n",
        "4",
        "--scale-n",
        "8",
        *COMMON,
    ]
    vae.main([*vae_args, "--steps", "2"])
    assert _step(root / "vae") == 2
    vae.main([*vae_args, "--steps", "3", "--resume", "--export", str(export / "vae")])
    assert _step(root / "vae") == 3
    sd_args = [
        "--out",
        str(root / "sdrun"),
        "--vae",
        str(export / "vae"),
        "--channels",
        "32,32,32,32",
        "--text-hidden",
        "32",
        "--text-layers",
        "1",
        "--heads",
        "2",
        "--cache-size",
        "8",
        "--refresh",
        "1",
        "--freeze-text-after",
        "2",
        "--data",
        "shapes",
        *COMMON,
    ]
    sd.main([*sd_args, "--steps", "2"])
    sd.main([*sd_args, "--steps", "3", "--resume", "--export", str(export)])
    assert _step(root / "sdrun") == 3
    return {"root": root, "sd": export}


def test_vae_export_loads(tiny: dict[str, Path]) -> None:
    model = AutoencoderKL.from_pretrained(tiny["sd"] / "vae")
    assert model.config.scaling_factor > 0
    with torch.no_grad():
        z = model.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert tuple(z.shape) == (1, 4, 8, 8)
    rows = (tiny["root"] / "vae" / common.LOG_CSV).read_text().splitlines()
    assert rows[0].startswith("step,loss")


def test_sd_resume_and_pipeline(tiny: dict[str, Path]) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny["sd"])
    img = pipe("a red circle", num_inference_steps=2, output_type="np").images
    assert img.shape == (1, 64, 64, 3)
    assert json.loads((tiny["sd"] / "editlab.json").read_text())["resolution"] == 64
    ck = common.load_checkpoint(tiny["root"] / "sdrun" / common.CHECKPOINT)
    assert ck["step"] == 3 and "text_encoder" in ck["modules"]


def test_sd_resume_keeps_its_tokenizer(tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run keeps the tokenizer it was trained with even if the world's vocabulary changed since."""
    import shutil

    run = tmp_path / "sdrun"
    shutil.copytree(tiny["root"] / "sdrun", run)
    before = (run / "tokenizer" / "tokenizer.json").read_text()
    monkeypatch.setattr(common, "world_vocabulary", lambda: ["zebra", "quokka", "marmot"])
    cfg = json.loads((run / "config.json").read_text())
    args = ["--out", str(run), "--vae", cfg["vae"], "--channels", cfg["channels"], "--text-hidden", "32"]
    args += ["--text-layers", "1", "--heads", "2", "--cache-size", "8", "--refresh", "1", "--data", "shapes"]
    sd.main([*args, *COMMON, "--steps", "4", "--resume", "--bf16"])
    assert _step(run) == 4
    assert (run / "tokenizer" / "tokenizer.json").read_text() == before


def test_vae_bf16_option(tmp_path: Path) -> None:
    """bfloat16-autocast training steps run and the full-size held-out PSNR stays finite."""
    args = ["--out", str(tmp_path / "vae"), "--channels", "8,8,8,8", "--groups", "4", "--data", "shapes"]
    args += ["--eval-n", "4", "--scale-n", "8", "--bf16", "--steps", "2", *COMMON]
    vae.main(args)
    summary = json.loads((tmp_path / "vae" / "summary.json").read_text())
    assert summary["step"] == 2 and np.isfinite(summary["heldout_psnr"]) and summary["heldout_psnr"] > 0


def test_inpaint_finetune(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "inpaint"
    args = [
        "--out",
        str(out / "run"),
        "--init",
        str(tiny["sd"]),
        "--cache-size",
        "4",
        "--refresh",
        "1",
        "--data",
        "shapes",
        *COMMON,
    ]
    inpaint.main([*args, "--steps", "2"])
    inpaint.main([*args, "--steps", "3", "--resume", "--export", str(out / "pipe")])
    assert _step(out / "run") == 3
    assert (out / "pipe" / "vae").is_symlink()
    pipe = StableDiffusionInpaintPipeline.from_pretrained(out / "pipe")
    assert pipe.unet.config.in_channels == 9
    image = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))
    res = pipe(
        "a red circle", image=image, mask_image=mask, height=64, width=64, num_inference_steps=2, output_type="np"
    ).images
    assert res.shape == (1, 64, 64, 3)


def test_ip2p_finetune_on_custom_triplets(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "ip2p"
    rng = np.random.default_rng(0)
    imgs, _ = common.random_shapes_batch(rng, 4)
    triplets = [(Image.fromarray(imgs[i]), "make it red", imgs[(i + 1) % 4]) for i in range(4)]
    args = ["--out", str(out / "run"), "--init", str(tiny["sd"]), "--cache-size", "4", "--refresh", "1", *COMMON]
    ip2p.train([*args, "--steps", "2"], triplets=triplets)
    ip2p.train([*args, "--steps", "3", "--resume", "--export", str(out / "pipe")], triplets=triplets)
    assert _step(out / "run") == 3
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(out / "pipe")
    assert pipe.unet.config.in_channels == 8
    res = pipe("make it red", image=Image.fromarray(imgs[0]), num_inference_steps=2, output_type="np").images
    assert res.shape == (1, 64, 64, 3)


def _state(folder: Path, cls: type) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in cls.from_pretrained(folder).state_dict().items()}


def test_sd_on_a_clip_text_tower_warm_started(tiny: dict[str, Path], tmp_path: Path) -> None:
    """``--text-encoder``: a CLIP model's text tower and tokenizer become the frozen text encoder (SD's recipe);
    ``--init-unet``: the UNet starts from an exported one (lr 0 keeps it there exactly)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel, CLIPTokenizer

    from editlab.models.tokenizer import build_clip_tokenizer

    clip_dir = tmp_path / "clip"
    tok = build_clip_tokenizer(["a", "red", "blue", "circle", "square", "on", "background"], clip_dir)
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 64, "patch_size": 16}
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(clip_dir)
    out = tmp_path / "sd"
    sd.main(["--out", str(tmp_path / "run"), "--vae", str(tiny["sd"] / "vae"), "--text-encoder", str(clip_dir),
             "--init-unet", str(tiny["sd"] / "unet"), "--cache-size", "8", "--refresh", "1", "--data", "shapes",
             "--lr", "0", "--steps", "2", "--export", str(out), *COMMON])
    tower = CLIPModel.from_pretrained(clip_dir).text_model.state_dict()
    exported = _state(out / "text_encoder", CLIPTextModel)
    assert exported.keys() == tower.keys()
    assert all(torch.equal(exported[k], tower[k].half().float()) for k in tower)  # frozen, stored as fp16
    assert CLIPTokenizer.from_pretrained(out / "tokenizer").get_vocab() == tok.get_vocab()
    init = _state(tiny["sd"] / "unet", UNet2DConditionModel)
    assert all(torch.equal(v, init[k]) for k, v in _state(out / "unet", UNet2DConditionModel).items())
    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe("a red circle", num_inference_steps=2, output_type="np").images.shape == (1, 64, 64, 3)


def test_finetune_warm_starts_from_a_variant_and_links_shared_parts_elsewhere(tiny: dict[str, Path]) -> None:
    import shutil

    from diffusers import UNet2DConditionModel

    out = tiny["root"] / "ip2p-warm"
    imgs, _ = common.random_shapes_batch(np.random.default_rng(1), 2)
    triplets = [(imgs[0], "make it red", imgs[1])]
    first = out / "first"
    args = ["--cache-size", "2", "--refresh", "0", "--steps", "1", *COMMON]
    ip2p.train(["--out", str(out / "run1"), "--init", str(tiny["sd"]), "--export", str(first), *args], triplets)
    # a second run starts from the first's 8-channel UNet; its export links the shared parts to --shared-from
    other = tiny["root"] / "sd-other"
    if not other.exists():
        shutil.copytree(tiny["sd"], other)
    ip2p.train(["--out", str(out / "run2"), "--init", str(tiny["sd"]), "--init-unet", str(first / "unet"),
                "--shared-from", str(other), "--lr", "0", "--export", str(out / "pipe"), *args], triplets)
    assert (out / "pipe" / "text_encoder").readlink().parts[-2:] == ("sd-other", "text_encoder")
    before = _state(first / "unet", UNet2DConditionModel)
    after = _state(out / "pipe" / "unet", UNet2DConditionModel)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_expand_unet_keeps_function() -> None:
    unet = sd.build_unet((32, 32, 32, 32), 4, 32, 2)
    big = sd.expand_unet(unet, 9)
    x, c = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        a = unet(x, 10, encoder_hidden_states=c).sample
        b = big(torch.cat([x, torch.randn(1, 5, 8, 8)], 1), 10, encoder_hidden_states=c).sample
    assert torch.allclose(a, b, atol=1e-5)


def test_ema_and_checkpoint_roundtrip(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    ema = common.EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert not torch.allclose(ema.shadow.weight, model.weight)
    common.save_checkpoint(tmp_path / "c.pt", {"ema": ema.state_dict(), "step": 7})
    back = common.load_checkpoint(tmp_path / "c.pt")
    assert back["step"] == 7 and not list(tmp_path.glob("*.tmp*"))
    assert common.load_checkpoint(tmp_path / "missing.pt") is None


@pytest.mark.parametrize(
    ("folder", "cls", "kwargs"),
    [
        ("sd", StableDiffusionPipeline, {}),
        ("sd-inpaint", StableDiffusionInpaintPipeline, {"mask": True}),
        ("ip2p", StableDiffusionInstructPix2PixPipeline, {"image": True}),
    ],
)
def test_shipped_models(folder: str, cls: type, kwargs: dict[str, bool]) -> None:
    path = WEIGHTS / folder
    if not (path / "model_index.json").exists() or not (path / "unet").exists():
        pytest.skip(f"{path} not present")
    pipe = cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    call: dict = {"num_inference_steps": 2, "output_type": "np"}
    if kwargs.get("image") or kwargs.get("mask"):
        call["image"] = image
    if kwargs.get("mask"):
        call.update(mask_image=Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16)), height=64, width=64)
    res = pipe("a large red circle at center on a white background", **call).images
    assert res.shape == (1, 64, 64, 3)


def test_latent_linear_probe_separates_informative_from_noise() -> None:
    """8x average-pooled pixels carry object colour linearly; random latents carry nothing."""
    from editlab.train.evaluate import latent_linear_probe

    pooled = latent_linear_probe(lambda x: torch.nn.functional.avg_pool2d(x, 8), n=800)
    gen = torch.Generator().manual_seed(0)
    noise = latent_linear_probe(lambda x: torch.randn(x.shape[0], 4, 8, 8, generator=gen), n=800)
    assert pooled["color"] > 0.85
    assert noise["color"] < 0.3


def test_text_linear_probe_separates_informative_from_uninformative_conditioning() -> None:
    """A bag of one-hot token embeddings carries colour, shape and position words linearly (mean over
    positions); an encoder that ignores the words (position embeddings only) carries nothing."""
    import tempfile

    from editlab.datasets.shapesworld import world
    from editlab.models.tokenizer import build_clip_tokenizer
    from editlab.train.evaluate import text_linear_probe

    with tempfile.TemporaryDirectory() as d:
        tok = build_clip_tokenizer(world.vocabulary(), d)
    eye = torch.eye(len(tok))

    class OneHot(torch.nn.Module):
        def __init__(self, informative: bool) -> None:
            super().__init__()
            self.informative = informative
            self.pos = torch.nn.Parameter(torch.randn(77, len(tok), generator=torch.Generator().manual_seed(0)))

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor]:
            return (eye[ids] if self.informative else self.pos.expand(len(ids), -1, -1),)

    good = text_linear_probe(OneHot(True), tok, n=600)
    bad = text_linear_probe(OneHot(False), tok, n=600)
    assert min(good["mean"].values()) > 0.95, good
    assert max(bad["mean"].values()) < 0.4 and max(bad["last"].values()) < 0.4, bad
