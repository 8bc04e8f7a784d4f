"""FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models (Kulikov et al., ICCV 2025).

FlowEdit never inverts the source. It integrates an ODE directly from the source latents ``x_src`` to the edit:
at each step it noises the source afresh, ``z_src = (1 - sigma) x_src + sigma n`` (n ~ N(0, I)), shifts the same
noisy point by the current edit, ``z_tar = z_edit + z_src - x_src``, and moves the edit by the *difference* of the
target- and source-conditioned velocities, ``z_edit += (sigma_next - sigma) (v(z_tar | target) - v(z_src |
source))``, averaged over ``n_avg`` noise draws. Only the steps from ``T - n_max`` on are taken (the first
ones would change the layout); the last ``n_min`` steps are plain sampling from ``z_edit + z_src - x_src`` under
the target prompt (SDEdit-style). With equal prompts and guidance scales the two velocities coincide and the
source comes back up to the VAE round trip.

Written from the official code, fallenshock/FlowEdit ``FlowEdit_utils.py`` (``FlowEditSD3``, ``FlowEditFLUX``)
and ``run_script.py`` (VAE posterior mode, ``(z - shift) * scale``, an empty negative prompt for SD3), with the
settings of ``SD3_exp.yaml`` / ``FLUX_exp.yaml`` as presets. Deviations, on purpose: the noise is drawn from the
runner's per-sample generator instead of torch's global one; the n_min phase works for SD3 too (the official SD3
function references an undefined ``noise_pred_tar`` there and would fail), and it runs without classifier-free
guidance when a scale is at most 1, as the SD3 pipeline does (the official function then passes a tuple to the
transformer).

Backbones without a preset (editlab's ShapesWorld flow model, toy) use their own step count and guidance scale
for the target, guidance 1.5 for the source and ``n_max`` at 66% of the steps (the SD3 preset's share).
"""

from __future__ import annotations

import torch

from editlab.methods.base import EditMethod
from editlab.methods.flow import FLOW_FAMILIES, FlowModel, noise_like
from editlab.methods.presets import Preset
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy

OFFICIAL = "fallenshock/FlowEdit"


class FlowEdit(EditMethod):
    name = "flowedit"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Kulikov et al., FlowEdit, ICCV 2025",
    )
    families = FLOW_FAMILIES
    presets = {
        "sd3": Preset(f"{OFFICIAL} SD3_exp.yaml (stable-diffusion-3-medium)",
                      {"num_inference_steps": 50, "n_max": 33, "n_min": 0, "n_avg": 1,
                       "src_guidance_scale": 3.5, "tar_guidance_scale": 13.5}),
        "flux": Preset(f"{OFFICIAL} FLUX_exp.yaml (FLUX.1-dev)",
                       {"num_inference_steps": 28, "n_max": 24, "n_min": 0, "n_avg": 1,
                        "src_guidance_scale": 1.5, "tar_guidance_scale": 5.5}),
    }

    def __init__(self, num_inference_steps: int | None = None, n_max: int | None = None, n_min: int | None = None,
                 n_avg: int | None = None, src_guidance_scale: float | None = None,
                 tar_guidance_scale: float | None = None, negative_prompt: str = "") -> None:
        super().__init__(num_inference_steps=num_inference_steps, n_max=n_max, n_min=n_min, n_avg=n_avg,
                         src_guidance_scale=src_guidance_scale, tar_guidance_scale=tar_guidance_scale,
                         negative_prompt=negative_prompt)
        self.num_inference_steps = num_inference_steps
        self.n_max = n_max
        self.n_min = n_min
        self.n_avg = n_avg
        self.src_guidance_scale = src_guidance_scale
        self.tar_guidance_scale = tar_guidance_scale
        self.negative_prompt = negative_prompt

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        # settings neither given nor preset: the backbone's own scales (see the module docstring)
        if self.num_inference_steps is None:
            self.num_inference_steps = backbone.num_inference_steps
        if self.n_max is None:
            self.n_max = round(0.66 * self.num_inference_steps)
        self.n_min = 0 if self.n_min is None else self.n_min
        self.n_avg = 1 if self.n_avg is None else self.n_avg
        if self.src_guidance_scale is None:
            self.src_guidance_scale = 1.5
        if self.tar_guidance_scale is None:
            self.tar_guidance_scale = backbone.guidance_scale
        if not 0 <= self.n_min <= self.n_max <= self.num_inference_steps:
            raise ValueError(f"FlowEdit needs 0 <= n_min <= n_max <= num_inference_steps, got n_min={self.n_min}, "
                             f"n_max={self.n_max}, steps={self.num_inference_steps}")
        if self.n_avg < 1:
            raise ValueError(f"n_avg must be >= 1, got {self.n_avg}")
        self.model = FlowModel(backbone)
        self.model.check_size(backbone.resolution, backbone.resolution)

    def describe(self) -> dict:
        return super().describe() | {"resolved": {k: getattr(self, k) for k in (
            "num_inference_steps", "n_max", "n_min", "n_avg", "src_guidance_scale", "tar_guidance_scale")}}

    @torch.no_grad()
    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        m, steps = self.model, self.num_inference_steps
        m.start()
        # 1. Encode the source image (posterior mode) and both prompts
        x_src = m.encode_image(sample.source_image).float()
        src = m.encode_prompt(sample.source_prompt, self.negative_prompt)
        tar = m.encode_prompt(sample.target_prompt, self.negative_prompt)
        # 2. The sigma grid; only its last n_max steps are integrated
        timesteps, sigmas = m.timesteps(steps, x_src)
        z_edit, x_tar = x_src.clone(), None
        for i, t in enumerate(timesteps):
            if steps - i > self.n_max:
                continue
            sigma, sigma_next = sigmas[i].float(), sigmas[i + 1].float()
            if steps - i > self.n_min:
                # 3. FlowEdit step: the velocity difference at the same noisy point, averaged over n_avg draws
                v_delta = torch.zeros_like(x_src)
                for _ in range(self.n_avg):
                    z_src = (1 - sigma) * x_src + sigma * noise_like(x_src, generator)
                    z_tar = z_edit + z_src - x_src
                    v_src = m.velocity(z_src, t, src, self.src_guidance_scale, "src").float()
                    v_tar = m.velocity(z_tar, t, tar, self.tar_guidance_scale, "tar").float()
                    v_delta += (v_tar - v_src) / self.n_avg
                z_edit = z_edit + (sigma_next - sigma) * v_delta
            else:
                # 4. The last n_min steps: plain sampling under the target prompt from the shifted noisy source
                if x_tar is None:
                    x_tar = z_edit + (1 - sigma) * x_src + sigma * noise_like(x_src, generator) - x_src
                x_tar = x_tar + (sigma_next - sigma) * m.velocity(x_tar, t, tar, self.tar_guidance_scale,
                                                                  "tar").float()
        # 5. Decode
        out = z_edit if x_tar is None else x_tar
        return EditOutput(image=m.decode(out), info={
            "steps_run": min(self.n_max, steps), "n_avg": self.n_avg,
            "src_guidance_scale": self.src_guidance_scale, "tar_guidance_scale": self.tar_guidance_scale,
            "working_size": list(sample.source_image.size)})
