"""RF-Inversion: Semantic Image Inversion and Editing using Rectified Stochastic Differential Equations
(Rout et al., ICLR 2025).

1. **Controlled forward ODE** (paper Algorithm 1, Eq. 8): from the source latents ``y_0`` towards a fixed noise
   ``y_1``, each step follows ``u_hat = u(Y_t) + gamma (u(Y_t | y_1) - u(Y_t))`` with the model's velocity ``u``
   (empty prompt, guidance ``source_guidance_scale``) and the velocity towards the noise ``(y_1 - Y_t) / (1 - t)``;
   ``gamma`` trades faithfulness (high) against editability.
2. **Controlled reverse ODE** (Algorithm 2, Eq. 17): from the inverted latents under the target prompt, each
   step follows ``v_hat = v(X_t) + eta_t ((y_0 - X_t) / (1 - t_i) - v(X_t))``: the controller pulls the sample back
   towards the source for the steps in ``[start_timestep, stop_timestep)`` (fractions of the run), plain Euler
   sampling afterwards. With ``eta = 0`` the reverse ODE is plain sampling from the inverted latents.

Written from the official code: LituRout/RF-Inversion (README and ``scripts/test.py``: FLUX.1-dev, 28 steps,
``gamma=0.5``, ``eta=0.9``, ``start_timestep=0``, ``stop_timestep=7/28``) built on diffusers'
``examples/community/pipeline_flux_rf_inversion.py`` (``invert`` and ``__call__``), whose step rules this file
follows: the inversion encodes a VAE posterior sample, evaluates the model at ``t_i = i / (T + 1)`` while
stepping by the differences of the (time-shifted) sampling sigmas, ``(sigmas[i] - sigmas[i + 1])``, and the
editing loop uses ``t_i = 1 - sigma_i``. That inversion evaluates the model at a time other than the noise level
it has reached when the grid is shifted; ``inversion_grid=consistent`` instead walks the same sigma grid upwards
and evaluates the model at the sigma reached (the paper's Algorithm 1 on the sampling grid). The default is the
official one.

The paper and official code are FLUX-only; editlab also runs it on SD3-shaped backbones (editlab's ShapesWorld
flow model): there the guidance is classifier-free (none at a scale <= 1), which the inversion's default
``source_guidance_scale=0`` turns into the conditional velocity of the empty prompt.
"""

from __future__ import annotations

import torch

from editlab.methods.base import EditMethod
from editlab.methods.flow import FLOW_FAMILIES, FlowModel, noise_like
from editlab.methods.presets import Preset
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, SampleError, TaskType, Taxonomy

GRIDS = ("official", "consistent")


class RFInversion(EditMethod):
    name = "rf_inversion"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Rout et al., RF-Inversion, ICLR 2025",
    )
    families = FLOW_FAMILIES
    presets = {
        "flux": Preset("LituRout/RF-Inversion README + scripts/test.py (FLUX.1-dev); defaults of diffusers "
                       "examples/community/pipeline_flux_rf_inversion.py",
                       {"num_inference_steps": 28, "gamma": 0.5, "eta": 0.9, "start_timestep": 0.0,
                        "stop_timestep": 7 / 28, "guidance_scale": 3.5}),
    }

    def __init__(self, num_inference_steps: int | None = None, gamma: float | None = None, eta: float | None = None,
                 start_timestep: float | None = None, stop_timestep: float | None = None,
                 guidance_scale: float | None = None, source_guidance_scale: float = 0.0,
                 source_prompt: str = "empty", decay_eta: bool = False, eta_decay_power: float = 1.0,
                 inversion_grid: str = "official") -> None:
        super().__init__(num_inference_steps=num_inference_steps, gamma=gamma, eta=eta, start_timestep=start_timestep,
                         stop_timestep=stop_timestep, guidance_scale=guidance_scale,
                         source_guidance_scale=source_guidance_scale, source_prompt=source_prompt,
                         decay_eta=decay_eta, eta_decay_power=eta_decay_power, inversion_grid=inversion_grid)
        if source_prompt not in ("empty", "source"):
            raise ValueError(f"source_prompt must be 'empty' (the paper's) or 'source', got '{source_prompt}'")
        if inversion_grid not in GRIDS:
            raise ValueError(f"unknown inversion_grid '{inversion_grid}', available: {', '.join(GRIDS)}")
        self.num_inference_steps = num_inference_steps
        self.gamma = gamma
        self.eta = eta
        self.start_timestep = start_timestep
        self.stop_timestep = stop_timestep
        self.guidance_scale = guidance_scale
        self.source_guidance_scale = source_guidance_scale
        self.source_prompt = source_prompt
        self.decay_eta = decay_eta
        self.eta_decay_power = eta_decay_power
        self.inversion_grid = inversion_grid

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        # without a preset: the backbone's steps and guidance, the official controller settings
        if self.num_inference_steps is None:
            self.num_inference_steps = backbone.num_inference_steps
        if self.guidance_scale is None:
            self.guidance_scale = backbone.guidance_scale
        self.gamma = 0.5 if self.gamma is None else self.gamma
        self.eta = 0.9 if self.eta is None else self.eta
        self.start_timestep = 0.0 if self.start_timestep is None else self.start_timestep
        self.stop_timestep = 0.25 if self.stop_timestep is None else self.stop_timestep
        if not 0 <= self.start_timestep <= self.stop_timestep <= 1:
            raise ValueError(f"RF-Inversion needs 0 <= start_timestep <= stop_timestep <= 1, got "
                             f"{self.start_timestep}, {self.stop_timestep}")
        self.model = FlowModel(backbone)
        self.model.check_size(backbone.resolution, backbone.resolution)

    def describe(self) -> dict:
        return super().describe() | {"resolved": {k: getattr(self, k) for k in (
            "num_inference_steps", "gamma", "eta", "start_timestep", "stop_timestep", "guidance_scale",
            "source_guidance_scale", "source_prompt", "inversion_grid")}}

    @torch.no_grad()
    def invert(self, y0: torch.Tensor, prompt: str, generator: torch.Generator) -> torch.Tensor:
        """Algorithm 1: the controlled forward ODE from ``y0`` to (near) a noise ``y_1`` drawn from ``generator``."""
        m = self.model
        cond = m.encode_prompt(prompt)
        _, sigmas = m.timesteps(self.num_inference_steps, y0)
        sigmas = sigmas.float()
        y1 = noise_like(y0, generator).float()
        y = y0.clone()
        n = len(sigmas)  # steps + 1: the official loop runs i = 0 .. n - 2
        up = sigmas.flip(0)  # ascending: 0, ..., 1
        for i in range(n - 1):
            if self.inversion_grid == "official":
                t_i = torch.tensor(i / n)  # model time; the step uses the descending grid's i-th gap
                step = sigmas[i] - sigmas[i + 1]
            else:
                t_i = up[i]
                step = up[i + 1] - up[i]
            u = m.velocity(y, 1000 * t_i, cond, self.source_guidance_scale, "invert").float()
            u_cond = (y1 - y) / (1 - t_i)
            y = y + (u + self.gamma * (u_cond - u)) * step
        return y

    @torch.no_grad()
    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        if not sample.target_prompt.strip():
            raise SampleError("empty target prompt")
        m, steps = self.model, self.num_inference_steps
        m.start()
        # 1. Encode the source (a posterior sample, as the official inversion does)
        y0 = m.encode_image(sample.source_image, generator, sample=True).float()
        # 2. Controlled forward ODE (inversion) under the empty or the source prompt
        prompt = "" if self.source_prompt == "empty" else sample.source_prompt
        latents = self.invert(y0, prompt, generator)
        # 3. Controlled reverse ODE under the target prompt
        tar = m.encode_prompt(sample.target_prompt)
        timesteps, sigmas = m.timesteps(steps, y0)
        sigmas = sigmas.float()
        start, stop = int(self.start_timestep * steps), min(int(self.stop_timestep * steps), steps)
        for i, t in enumerate(timesteps):
            t_i = 1 - t.float() / 1000
            v = -m.velocity(latents, t, tar, self.guidance_scale, "edit").float()
            eta_t = self.eta if start <= i < stop else 0.0
            if self.decay_eta:
                eta_t = eta_t * (1 - i / steps) ** self.eta_decay_power
            v_hat = v + eta_t * ((y0 - latents) / (1 - t_i) - v)
            latents = latents + v_hat * (sigmas[i] - sigmas[i + 1])
        # 4. Decode
        return EditOutput(image=m.decode(latents), info={
            "controlled_steps": max(stop - start, 0), "gamma": self.gamma, "eta": self.eta,
            "guidance_scale": self.guidance_scale, "working_size": list(sample.source_image.size)})
