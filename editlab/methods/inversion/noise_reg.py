"""Pix2Pix-Zero's noise regularisation of DDIM inversion (Parmar et al., "Zero-shot Image-to-Image Translation",
SIGGRAPH 2023, Sec. 3.2; official code ``pix2pixzero/pix2pix-zero`` ``src/utils/ddim_inv.py``).

Plain DDIM inversion produces noise maps that are spatially correlated and not Gaussian, which editing then
amplifies. At every inversion step Pix2Pix-Zero moves the predicted noise ``e`` towards an uncorrelated,
standard-normal map before taking the step: ``num_reg_steps`` rounds of

* ``num_ac_rolls`` gradient steps of weight ``lambda_ac / num_ac_rolls`` on the auto-correlation loss: per
  channel and per level of an average-pooled pyramid (halving until the side is at most 8), the squared mean of
  the map times itself rolled by a random offset ``delta`` in ``[1, side // 2)``, along each spatial axis;
* one gradient step of weight ``lambda_kl`` on the KL divergence of the map's statistics from N(0, 1):
  ``var + mean**2 - 1 - log(var + 1e-7)``.

Defaults are the official ones (lambda_ac = lambda_kl = 20, 5 rounds, 5 rolls). The official code draws the
offsets from Python's ``random`` module; here they come from a generator seeded with ``seed``, so the inversion
is deterministic and a source's trajectory can be cached and shared. (PIE-Bench's copy of this file,
``cure-lab/PnPInversion models/pix2pix_zero/ddim_inv.py``, draws offsets from ``[0, side // 2)``, allowing a
zero offset, which is not an auto-correlation; editlab follows the Pix2Pix-Zero repository.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseRegularization:
    """Settings of the regularisation (the official ``lambda_ac``, ``lambda_kl``, ``num_reg_steps``,
    ``num_ac_rolls``) and the seed of the random offsets."""

    lambda_ac: float = 20.0
    lambda_kl: float = 20.0
    num_reg_steps: int = 5
    num_ac_rolls: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_reg_steps < 0 or self.num_ac_rolls < 1:
            raise ValueError(f"num_reg_steps must be >= 0 and num_ac_rolls >= 1, got {self.num_reg_steps}, "
                             f"{self.num_ac_rolls}")

    @classmethod
    def from_spec(cls, spec: Any) -> NoiseRegularization | None:
        """None, an instance, or a mapping of settings (a config node)."""
        if spec is None or isinstance(spec, NoiseRegularization):
            return spec
        return cls(**dict(spec))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def auto_corr_loss(noise: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pix2Pix-Zero's auto-correlation loss of a ``(1, C, H, W)`` noise map (random offsets from ``generator``)."""
    if noise.shape[0] != 1:
        raise ValueError(f"auto_corr_loss takes one noise map, got a batch of {noise.shape[0]}")
    loss = noise.new_zeros(())
    for channel in noise[0]:
        level = channel[None, None]
        while True:
            side = level.shape[2]
            shift = int(torch.randint(1, max(2, side // 2), (1,), generator=generator))
            loss = loss + (level * torch.roll(level, shifts=shift, dims=2)).mean() ** 2
            loss = loss + (level * torch.roll(level, shifts=shift, dims=3)).mean() ** 2
            if side <= 8:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return loss


def kl_divergence(noise: torch.Tensor) -> torch.Tensor:
    """KL term of the map's mean and (unbiased) variance against N(0, 1), as the official code writes it."""
    mean, var = noise.mean(), noise.var()
    return var + mean**2 - 1 - torch.log(var + 1e-7)


def _grad(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(leaf), [leaf])
    return grad


def regularize_noise(noise: torch.Tensor, reg: NoiseRegularization,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The official regularisation of one step's noise prediction (computed in float32)."""
    e = noise.detach().float()
    for _ in range(reg.num_reg_steps):
        # 1. Auto-correlation: num_ac_rolls steps, each with fresh random offsets
        if reg.lambda_ac > 0:
            for _ in range(reg.num_ac_rolls):
                e = e - reg.lambda_ac * _grad(lambda x: auto_corr_loss(x, generator), e) / reg.num_ac_rolls
        # 2. KL divergence from N(0, 1)
        if reg.lambda_kl > 0:
            e = e - reg.lambda_kl * _grad(kl_divergence, e)
    return e.to(noise.dtype)


def noise_regularizer(reg: NoiseRegularization) -> Callable[[torch.Tensor], torch.Tensor]:
    """A per-step noise function for :func:`editlab.methods.common.ddim_invert`, with its own seeded generator."""
    generator = torch.Generator().manual_seed(reg.seed)
    return lambda noise: regularize_noise(noise, reg, generator)
