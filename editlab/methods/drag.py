"""SDE-Drag (Nie et al., "The Blessing of Randomness: SDE Beats ODE in General Diffusion-based Image Editing",
ICLR 2024): point-based (drag) editing by copy-and-paste in the noisy latent space, then SDE sampling.

For each of a few small moves from the handle point towards the target point:

1. Forward (noising) SDE from the current latents to t0, recording every intermediate latent.
2. Copy and paste at t0: the latent patch around the handle point is pasted, amplified by alpha, at the target
   point; the patch it left is mixed with fresh noise (beta * patch + sqrt(1 - beta^2) * noise). The patch is the
   (2r + 1)-cell square centred on the point (the reference code's is the 2r-cell square from p - r to p + r - 1),
   clipped at the borders.
3. Cycle-SDE sampling back to 0: DDPM (eta = 1) steps whose noise is the one that maps the recorded forward latent
   at t onto the recorded one at t - 1, so that unedited content reconstructs exactly; outside the editable mask the
   recorded forward latents are kept at every step. Classifier-free guidance under the source prompt grows
   linearly from 1 at t = 0 to ``guidance_scale`` at t0.

Training-free: the paper's optional per-image LoRA fine-tuning (100 steps, used for DragBench) is not included.
Points come from the sample (``[(hx, hy), ..., (tx, ty), ...]``: handle points then target points, pixels). The
editable region is the sample's mask when it has one, else the whole image; the patches swept along the drag path
are added to it, since content outside the region is reset at every step and a mask that marks only the old and
new footprints (ShapesWorld's) would otherwise erase the object on its way. On ShapesWorld, ``object_movement``
samples carry points; the others are "not applicable".

Preset ``sd`` (ML-GSAI/SDE-Drag ``sdedrag_dragbench.py``, the DragBench settings): 200 steps over [0, T],
t0 = 0.6, guidance 3, alpha = 1.1, beta = 0.3, patch radius 5 and move step 2 latent pixels on SD's 64-px latents.
Backbones without a preset use the same values with radius and move step scaled to their latent size (1 latent
pixel each on 8-px latents).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from diffusers import DDIMScheduler

from editlab.methods.base import EditMethod
from editlab.methods.blended_latent import latent_mask
from editlab.methods.common import decode_latents, encode_image, encode_prompt
from editlab.methods.defaults import fill_unset
from editlab.methods.presets import Preset
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, SampleError, TaskType, Taxonomy

PAPER_LATENT_SIZE = 64  # SD-1.5 latents at 512 px, on which the paper's radius and move step are given


class SDEDrag(EditMethod):
    name = "drag"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.POINTS,),
        tasks=(TaskType.OBJECT_MOVEMENT, TaskType.SIZE_CHANGE, TaskType.POSE_ACTION),
        paper="Nie et al., SDE-Drag, ICLR 2024",
    )
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(source="ML-GSAI/SDE-Drag sdedrag_dragbench.py (--steps 200 --t_0 0.6 --scale 3 --alpha 1.1 "
                            "--beta 0.3 --r 5 --step_size 2)",
                     settings={"num_steps": 200, "t0": 0.6, "guidance_scale": 3.0, "alpha": 1.1, "beta": 0.3,
                               "radius": 5, "move_step": 2.0}),
    }

    def __init__(self, num_steps: int | None = None, t0: float | None = None, guidance_scale: float | None = None,
                 alpha: float | None = None, beta: float | None = None, radius: int | None = None,
                 move_step: float | None = None) -> None:
        super().__init__(num_steps=num_steps, t0=t0, guidance_scale=guidance_scale, alpha=alpha, beta=beta,
                         radius=radius, move_step=move_step)
        if t0 is not None and not 0.0 < t0 <= 1.0:
            raise ValueError(f"t0 must be in (0, 1], got {t0}")
        if beta is not None and not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.num_steps = num_steps
        self.t0 = t0
        self.guidance_scale = guidance_scale
        self.alpha = alpha
        self.beta = beta
        self.radius = radius
        self.move_step = move_step

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        # radius and move step left None are scaled to the latent size at edit time
        self.preset_record["defaults"] = fill_unset(self, {"num_steps": 200, "t0": 0.6, "guidance_scale": 3.0,
                                                           "alpha": 1.1, "beta": 0.3})
        scheduler = DDIMScheduler.from_config(backbone.scheduler.config)
        scheduler.set_timesteps(self.num_steps)
        levels = max(1, int(self.t0 * self.num_steps))
        # noise levels 0 (clean) .. K: timesteps ascending, with alpha_bar = 1 at level 0
        self.timesteps = torch.cat([torch.tensor([-1]), scheduler.timesteps.flip(0)[:levels]])
        alphas = scheduler.alphas_cumprod[self.timesteps[1:]].double()
        self.alpha_bars = torch.cat([torch.ones(1, dtype=torch.float64), alphas])

    # --- the Cycle-SDE -------------------------------------------------------------------------------------
    def _eps(self, latents: torch.Tensor, level: int, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        """Guided noise predictions for a batch of latents at ``level``; guidance grows linearly with the level."""
        k = len(self.timesteps) - 1
        guidance = 1.0 + (self.guidance_scale - 1.0) * (level - 1) / max(1, k - 1)
        t = self.timesteps[level].to(latents.device)
        n = latents.shape[0]
        eps = self.backbone.unet(torch.cat([latents] * 2), t,
                                 encoder_hidden_states=torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)]))
        eps_u, eps_c = eps.sample.chunk(2)
        return eps_u + guidance * (eps_c - eps_u)

    def _posterior_mean(self, x: torch.Tensor, eps: torch.Tensor, level: int) -> torch.Tensor:
        """Mean of the DDPM (DDIM eta = 1) step from ``level`` to ``level - 1``."""
        a, a_prev = float(self.alpha_bars[level]), float(self.alpha_bars[level - 1])
        sigma2 = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        return math.sqrt(a_prev) * x0 + math.sqrt(max(0.0, 1 - a_prev - sigma2)) * eps

    @torch.no_grad()
    def _drag_once(self, latents: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, radius: int,
                   mask: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
        def noise_like(x: torch.Tensor) -> torch.Tensor:
            return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)

        k = len(self.timesteps) - 1
        # 1. Forward SDE to t0, recording x_0 .. x_K
        forward = [latents]
        for level in range(1, k + 1):
            ratio = float(self.alpha_bars[level] / self.alpha_bars[level - 1])
            forward.append(math.sqrt(ratio) * forward[-1] + math.sqrt(1 - ratio) * noise_like(latents))
        # 2. Copy and paste at t0
        x = forward[-1].clone()
        h, w = x.shape[-2:]
        for (hx, hy), (tx, ty) in zip(handles.tolist(), targets.tolist()):
            left, right = min(radius, hx, tx), min(radius, w - 1 - hx, w - 1 - tx)
            top, bottom = min(radius, hy, ty), min(radius, h - 1 - hy, h - 1 - ty)
            patch = x[..., hy - top : hy + bottom + 1, hx - left : hx + right + 1].clone()
            fill = self.beta * patch + math.sqrt(1 - self.beta**2) * noise_like(patch)
            x[..., hy - top : hy + bottom + 1, hx - left : hx + right + 1] = fill
            x[..., ty - top : ty + bottom + 1, tx - left : tx + right + 1] = self.alpha * patch
        # 3. Cycle-SDE back to 0, keeping the recorded latents outside the mask
        for level in range(k, 0, -1):
            eps_x, eps_f = self._eps(torch.cat([x, forward[level]]), level, cond, uncond).chunk(2)
            # sigma * w, with w the noise that maps the recorded x_t onto the recorded x_{t-1} (Cycle-SDE); on the
            # last, noise-free step it is the residual that makes an unedited latent land exactly on x_0
            correction = forward[level - 1] - self._posterior_mean(forward[level], eps_f, level)
            x = self._posterior_mean(x, eps_x, level) + correction
            x = mask * x + (1 - mask) * forward[level - 1]
        return x

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        # 1. Encode the source, its prompt and the empty prompt
        latents = encode_image(bb, sample.source_image)
        cond = encode_prompt(bb, [sample.source_prompt or ""])
        uncond = encode_prompt(bb, [""])
        h, w = latents.shape[-2:]
        scale = torch.tensor([sample.source_image.width / w, sample.source_image.height / h])
        # 2. Points to latent pixels; radius and move step scaled from the paper's 64-px latents
        points = sample.points or []
        if len(points) < 2 or len(points) % 2:
            raise SampleError(f"drag needs handle and target points in pairs, got {len(points)} points")
        pts = (torch.tensor(points, dtype=torch.float32) / scale).floor().long()
        pts[:, 0].clamp_(0, w - 1)
        pts[:, 1].clamp_(0, h - 1)
        handles, targets = pts[: len(pts) // 2], pts[len(pts) // 2 :]
        radius = self.radius if self.radius is not None else max(1, round(5 * w / PAPER_LATENT_SIZE))
        move_step = self.move_step if self.move_step is not None else max(1.0, 2 * w / PAPER_LATENT_SIZE)
        # 3. The moves: each at most ~move_step latent pixels
        offset = (targets - handles).float()
        distance = float(offset.norm(dim=1).max())
        moves = max(1, math.ceil(distance / move_step - 1e-6))
        path = [handles + (offset * i / moves).round().long() for i in range(moves + 1)]
        # 4. The editable region: the sample's mask (else the whole image) plus the patches swept along the path
        if sample.mask is not None:
            mask = latent_mask(sample.mask, (h, w), latents.device, latents.dtype)
            for x, y in torch.cat(path).tolist():
                mask[..., max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1] = 1.0
        else:
            mask = torch.ones(1, 1, h, w, device=latents.device, dtype=latents.dtype)
        # 5. Drag move by move
        for start, end in zip(path[:-1], path[1:]):
            latents = self._drag_once(latents, start, end, radius, mask, cond, uncond, generator)
        # 6. Decode
        return EditOutput(image=decode_latents(bb, latents),
                          info={"moves": moves, "radius": radius, "latent_distance": distance})
