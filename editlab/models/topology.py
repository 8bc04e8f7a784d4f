"""A UNet's topology: its residual and transformer blocks by role, and layer choices resolved on it.

Editing methods control particular layers of the denoising UNet: Plug-and-Play injects the features of the
decoder's residual block ``up_blocks[1].resnets[1]``, MasaCtrl rewrites the self-attention of the transformer
blocks "from layer 10", Prompt-to-Prompt's local blend reads the 16x16 cross-attention maps, LEDITS++ its masks
at image / 32. Official code writes those choices as module indices of Stable Diffusion 1.5. editlab writes them
as **roles** (:class:`Role`: encoder or decoder, resolution level, position in forward order) and resolves them
on the backbone's own UNet (:class:`Topology`), so that on SD 1.5's topology they are exactly the official
indices, and on another UNet they name the blocks that play the same part.

Terms:

* ``place``: ``down`` (encoder), ``mid`` or ``up`` (decoder);
* ``downscale``: the block's feature resolution relative to the latents (1 = the latent size; SD 1.5 at
  512 px: 1 = 64x64, 2 = 32x32, 4 = 16x16, 8 = 8x8), read from where the UNet down- and upsamples;
* ``order``: forward order among blocks of one kind (SD 1.5 has 16 transformer blocks, 0-15: 6 in the
  encoder, 1 in the mid block, 9 in the decoder; and 22 residual blocks).

:data:`SD15_UNET_CONFIG` is SD 1.5's UNet configuration (``runwayml/stable-diffusion-v1-5``,
``unet/config.json``); :func:`sd15_topology` builds its topology without weights (on the ``meta`` device).
This module is part of the models layer: it reads a UNet, it knows nothing of methods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

PLACES = ("down", "mid", "up")
KINDS = ("resnet", "transformer")

#: SD 1.5's UNet configuration (runwayml/stable-diffusion-v1-5, unet/config.json): the blocks, layers per block,
#: attention placement and heads per level (diffusers' ``attention_head_dim: 8`` is the number of heads).
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "transformer_layers_per_block": 1,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "center_input_sample": False,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
}


@dataclass(frozen=True)
class Block:
    """One residual block (``resnets[index]``) or transformer block (``attentions[index].transformer_blocks[t]``)."""

    kind: str
    place: str
    block: int  # index of the down/up block; 0 for the mid block
    index: int  # resnets[index] or attentions[index]
    transformer: int  # transformer_blocks[transformer] (0 for residual blocks)
    downscale: int
    order: int

    @property
    def path(self) -> str:
        """The module's name in ``unet.named_modules()``."""
        head = "mid_block" if self.place == "mid" else f"{self.place}_blocks.{self.block}"
        if self.kind == "resnet":
            return f"{head}.resnets.{self.index}"
        return f"{head}.attentions.{self.index}.transformer_blocks.{self.transformer}"

    def processor(self, cross: bool) -> str:
        """The name of this transformer block's self- (``attn1``) or cross-attention (``attn2``) processor."""
        if self.kind != "transformer":
            raise ValueError(f"{self.path} is a residual block: it has no attention processor")
        return f"{self.path}.{'attn2' if cross else 'attn1'}.processor"

    def describe(self) -> str:
        where = {"down": "encoder", "mid": "mid block", "up": "decoder"}[self.place]
        return f"{self.path} ({where}, latent/{self.downscale}, {self.kind} #{self.order})"


@dataclass(frozen=True)
class Role:
    """A choice of blocks by role, resolved by :meth:`Topology.select`.

    ``kind``: ``resnet`` or ``transformer``; ``place``: ``down``/``mid``/``up`` (``None``: anywhere);
    ``downscales``: resolution levels to keep (``None``: all); then, in forward order, ``skip`` leaves out the
    first blocks of what is left, and ``index`` keeps only the block at that position. Example, Plug-and-Play's
    feature block: ``Role("resnet", "up", (4,), index=1)`` is, on SD 1.5, ``up_blocks.1.resnets.1``.
    """

    kind: str
    place: str | None = None
    downscales: tuple[int, ...] | None = None
    skip: int = 0
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown block kind {self.kind!r}, available: {', '.join(KINDS)}")
        if self.place is not None and self.place not in PLACES:
            raise ValueError(f"unknown place {self.place!r}, available: {', '.join(PLACES)}")

    def describe(self) -> str:
        parts = [self.kind, {"down": "encoder", "mid": "mid block", "up": "decoder", None: "anywhere"}[self.place]]
        if self.downscales is not None:
            parts.append("at latent/" + ",".join(str(d) for d in self.downscales))
        if self.skip:
            parts.append(f"but the first {self.skip}")
        if self.index is not None:
            parts.append(f"#{self.index} of those")
        return " ".join(parts)


class Topology:
    """The residual and transformer blocks of a diffusers ``UNet2DConditionModel``, in forward order."""

    def __init__(self, blocks: Iterable[Block]) -> None:
        blocks = list(blocks)
        self.resnets = [b for b in blocks if b.kind == "resnet"]
        self.transformers = [b for b in blocks if b.kind == "transformer"]

    @classmethod
    def of(cls, unet: torch.nn.Module) -> Topology:
        """Read the topology of ``unet``: its blocks, and each block's resolution from where it down/upsamples."""
        blocks: list[Block] = []
        counts = {"resnet": 0, "transformer": 0}

        def add(kind: str, place: str, block: int, index: int, transformer: int, downscale: int) -> None:
            blocks.append(Block(kind, place, block, index, transformer, downscale, counts[kind]))
            counts[kind] += 1

        def add_stage(stage: torch.nn.Module, place: str, block: int, downscale: int) -> None:
            # down/up stages alternate resnets[i], attentions[i]; the mid block runs resnets[0], then
            # attentions[i], resnets[i + 1]
            resnets = list(getattr(stage, "resnets", None) or [])
            attentions = list(getattr(stage, "attentions", None) or [])
            steps: list[tuple[str, int]] = []
            if place == "mid":
                steps = [("resnet", 0)] if resnets else []
                for i in range(max(len(attentions), len(resnets) - 1)):
                    steps += [("transformer", i)] * (i < len(attentions)) + [("resnet", i + 1)] * (i + 1 < len(resnets))
            else:
                for i in range(max(len(resnets), len(attentions))):
                    steps += [("resnet", i)] * (i < len(resnets)) + [("transformer", i)] * (i < len(attentions))
            for kind, i in steps:
                if kind == "resnet":
                    add("resnet", place, block, i, 0, downscale)
                else:
                    for t in range(len(getattr(attentions[i], "transformer_blocks", []))):
                        add("transformer", place, block, i, t, downscale)

        downscale = 1
        for b, stage in enumerate(unet.down_blocks):
            add_stage(stage, "down", b, downscale)
            if getattr(stage, "downsamplers", None):
                downscale *= 2
        if getattr(unet, "mid_block", None) is not None:
            add_stage(unet.mid_block, "mid", 0, downscale)
        for b, stage in enumerate(unet.up_blocks):
            add_stage(stage, "up", b, downscale)
            if getattr(stage, "upsamplers", None):
                downscale //= 2
        return cls(blocks)

    # --- queries ---------------------------------------------------------------------------------------------
    def blocks(self, kind: str) -> list[Block]:
        if kind not in KINDS:
            raise ValueError(f"unknown block kind {kind!r}, available: {', '.join(KINDS)}")
        return self.resnets if kind == "resnet" else self.transformers

    def levels(self, kind: str, place: str | None = None) -> list[int]:
        """The downscales at which ``place`` has blocks of ``kind``, finest first."""
        return sorted({b.downscale for b in self.blocks(kind) if place is None or b.place == place})

    def select(self, role: Role) -> list[Block]:
        """The blocks ``role`` names on this topology; a clear error when it names none."""
        chosen = [b for b in self.blocks(role.kind) if (role.place is None or b.place == role.place)
                  and (role.downscales is None or b.downscale in role.downscales)]
        chosen = chosen[role.skip:]
        if role.index is not None:
            chosen = chosen[role.index : role.index + 1]
        if not chosen:
            raise ValueError(f"this UNet has no block for the role '{role.describe()}'; its {role.kind} blocks are "
                             f"at latent/{self.levels(role.kind, role.place)} in the {role.place or 'whole UNet'}")
        return chosen

    def translate(self, order: int, reference: Topology, kind: str = "transformer") -> int:
        """The order, on this topology, of the block playing the part of ``reference``'s block ``order``.

        The reference block's role is its place, its resolution level and its relative position among that
        level's blocks; the block at the same relative position of the same place and level here is returned
        (``order`` past the last reference block maps past the last block here). On a topology equal to the
        reference this is the identity.
        """
        ref_blocks = reference.blocks(kind)
        if order >= len(ref_blocks):
            return len(self.blocks(kind))
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        ref = ref_blocks[order]
        ref_level = [b for b in ref_blocks if b.place == ref.place and b.downscale == ref.downscale]
        here = [b for b in self.blocks(kind) if b.place == ref.place and b.downscale == ref.downscale]
        if not here:
            raise ValueError(f"{kind} block {order} of the reference ({ref.describe()}) has no counterpart: this "
                             f"UNet's {ref.place} {kind} blocks are at latent/{self.levels(kind, ref.place)}")
        position = ref_level.index(ref) * len(here) // len(ref_level)
        return here[position].order

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: blocks per place and level."""
        out: dict[str, Any] = {}
        for kind in KINDS:
            for place in PLACES:
                for d in self.levels(kind, place):
                    n = sum(1 for b in self.blocks(kind) if b.place == place and b.downscale == d)
                    out[f"{kind}s.{place}.latent/{d}"] = n
        return out


@lru_cache(maxsize=1)
def sd15_topology() -> Topology:
    """SD 1.5's UNet topology, built from :data:`SD15_UNET_CONFIG` on the ``meta`` device (no weights)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    return Topology.of(unet)
