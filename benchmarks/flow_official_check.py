"""editlab's FlowEdit and RF-Inversion against the official code, on toy SD3 / FLUX components, same noise.

    git clone https://github.com/fallenshock/FlowEdit
    git clone https://github.com/huggingface/diffusers   # for examples/community/pipeline_flux_rf_inversion.py
    python benchmarks/flow_official_check.py --flowedit FlowEdit/FlowEdit_utils.py \
        --rf-inversion diffusers/examples/community/pipeline_flux_rf_inversion.py

Prints the largest pixel difference (of 255) between editlab's output and the official function's on one
ShapesWorld sample, with each method's preset settings (FlowEdit: ``SD3_exp.yaml`` and ``FLUX_exp.yaml``;
RF-Inversion: the official README's FLUX settings). The official code is read from the given files, never
shipped. Two adaptations make it comparable, nothing else is changed: ``FlowEditFLUX`` was written for diffusers
0.30, whose FLUX ``vae_scale_factor`` was 16 (8 since 0.32), so its latent-size line is adapted when loaded; and
the official functions draw noise with ``torch.randn_like`` from torch's global generator in their own layout
(FLUX: packed tokens), so editlab's noise is drawn in that layout from a generator with the same seed, and the
source latents are made contiguous (``randn_like`` follows the tensor's strides).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

FLUX_030 = "x_src.shape[2]*pipe.vae_scale_factor//2, x_src.shape[3]*pipe.vae_scale_factor//2"
FLUX_032 = "x_src.shape[2]*pipe.vae_scale_factor, x_src.shape[3]*pipe.vae_scale_factor"


def load_module(path: str, name: str, replace: tuple[str, str] | None = None) -> ModuleType:
    source = Path(path).read_text()
    if replace is not None:
        if replace[0] not in source:
            raise SystemExit(f"{path}: expected line not found ({replace[0]}); another revision of the file?")
        source = source.replace(*replace)
    module = ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(source, path, "exec"), module.__dict__)
    return module


def packed_noise(model):
    """Noise drawn in FLUX's packed token layout (as the official code draws it), returned unpacked."""
    def draw(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        n = torch.randn((b, (h // 2) * (w // 2), c * 4), generator=generator)
        return model.pipe._unpack_latents(n, h * model.vae_scale, w * model.vae_scale, model.vae_scale).to(x)
    return draw


def max_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flowedit", required=True, help="FlowEdit_utils.py of fallenshock/FlowEdit")
    p.add_argument("--rf-inversion", required=True, help="diffusers examples/community/pipeline_flux_rf_inversion.py")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    import editlab.methods.flowedit as FE
    import editlab.methods.rf_inversion as RF
    from editlab.bench.runner import prepare_sample
    from editlab.datasets.shapesworld import ShapesWorldDataset
    from editlab.models.toy_families import toy_family_backbone

    official = load_module(args.flowedit, "flowedit_official", (FLUX_030, FLUX_032))
    ds = ShapesWorldDataset()
    s = prepare_sample(ds.load(ds.ids()[3]), 64)
    gen = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731

    m = FE.FlowEdit()
    m.setup(toy_family_backbone("sd3", device="cpu", preset="sd3"))
    ours = m.edit(s, gen()).image
    x = m.model.encode_image(s.source_image).contiguous()
    torch.manual_seed(args.seed)
    z = official.FlowEditSD3(m.model.pipe, m.model.pipe.scheduler, x, s.source_prompt, s.target_prompt, "", 50, 1,
                             3.5, 13.5, 0, 33)
    print(f"FlowEdit SD3 (SD3_exp.yaml settings): max |editlab - official| = {max_diff(ours, m.model.decode(z))}/255")

    m = FE.FlowEdit()
    m.setup(toy_family_backbone("flux", device="cpu", preset="flux"))
    FE.noise_like = packed_noise(m.model)
    ours = m.edit(s, gen()).image
    x = m.model.encode_image(s.source_image).contiguous()
    torch.manual_seed(args.seed)
    z = official.FlowEditFLUX(m.model.pipe, m.model.pipe.scheduler, x, s.source_prompt, s.target_prompt, "", 28, 1,
                              1.5, 5.5, 0, 24)
    print(f"FlowEdit FLUX (FLUX_exp.yaml settings): max |editlab - official| = {max_diff(ours, m.model.decode(z))}/255")

    community = load_module(args.rf_inversion, "rf_inversion_official")
    bb = toy_family_backbone("flux", device="cpu", preset="flux")
    r = RF.RFInversion()
    r.setup(bb)
    RF.noise_like = packed_noise(r.model)
    ours = r.edit(s, gen()).image
    names = ("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "transformer", "scheduler")
    ref = community.RFInversionFluxPipeline(**{k: v for k, v in bb.components().items() if k in names})
    ref.set_progress_bar_config(disable=True)
    torch.manual_seed(args.seed)
    inv, img_lat, ids = ref.invert(image=s.source_image, source_prompt="", source_guidance_scale=0.0,
                                   num_inversion_steps=28, gamma=0.5, height=64, width=64)
    out = ref(prompt=s.target_prompt, inverted_latents=inv, image_latents=img_lat, latent_image_ids=ids,
              start_timestep=0, stop_timestep=7 / 28, num_inference_steps=28, eta=0.9, guidance_scale=3.5,
              height=64, width=64).images[0]
    print(f"RF-Inversion FLUX (README settings): max |editlab - community pipeline| = {max_diff(ours, out)}/255")


if __name__ == "__main__":
    main()
