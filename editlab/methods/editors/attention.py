"""Attention control: diffusers attention processors that let an editor read or rewrite attention.

:func:`controlled_attention` installs a :class:`ControlledAttnProcessor` (a subclass of diffusers'
``AttnProcessor2_0``) on the UNet layers an :class:`AttentionControl` selects, with
``unet.set_attn_processor``, and restores the original processors afterwards. At each call the processor
asks the control whether it acts on this layer at this step; if not, it is plain ``AttnProcessor2_0``
(fused scaled-dot-product attention). Otherwise the control may rewrite queries, keys and values (MasaCtrl,
Plug-and-Play) and, only where it asks for them, the attention probabilities are materialised, handed to the
control (Prompt-to-Prompt, Pix2Pix-Zero) and applied to the values.

The layers come from the UNet's topology (:mod:`editlab.models.topology`): each :class:`AttentionLayer` carries
its transformer block's place, resolution level and forward order, so a control chooses layers by role and the
choice resolves to the official indices on SD 1.5's topology. Every layer a control acted on is counted in
:attr:`AttentionControl.touched` (other injection points, such as Plug-and-Play's residual block, are counted
there too); :func:`observe_controls` lists the controls installed while it is open, so a test or a diagnostic
can read what an edit touched.

Tensors passed to a control have shape ``(rows, heads, tokens, dim)`` (probabilities: ``(rows, heads,
queries, keys)``); rows follow the loop's layout: all branches' unconditional rows, then the conditional rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from editlab.methods.editors.loop import LoopHooks, Step
from editlab.models.topology import Block, Role, Topology


@dataclass(frozen=True)
class AttentionLayer:
    """One attention module of the UNet's transformer blocks.

    ``order`` numbers the transformer blocks in forward order (down, mid, up; SD-1.5 has 16), shared by the
    block's self- (``attn1``) and cross-attention (``attn2``); ``downscale`` is the layer's resolution
    relative to the latents (1, 2, 4, ...).
    """

    name: str
    place: str
    block: int
    attention: int
    transformer: int
    is_cross: bool
    order: int
    downscale: int

    @classmethod
    def of(cls, block: Block, cross: bool) -> AttentionLayer:
        return cls(name=block.processor(cross), place=block.place, block=block.block, attention=block.index,
                   transformer=block.transformer, is_cross=cross, order=block.order, downscale=block.downscale)

    def plays(self, blocks: list[Block]) -> bool:
        """Whether this layer belongs to one of ``blocks`` (e.g. the blocks a :class:`Role` resolved to)."""
        return any(b.order == self.order for b in blocks)


def unet_attention_layers(unet: torch.nn.Module, topology: Topology | None = None) -> list[AttentionLayer]:
    """The UNet's transformer attention layers (self-attention, then cross-attention of each block), in forward
    order, read from its topology; only layers the UNet has a processor for are listed."""
    processors = set(unet.attn_processors)
    topology = topology or Topology.of(unet)
    layers = [AttentionLayer.of(block, cross) for block in topology.transformers for cross in (False, True)]
    return [layer for layer in layers if layer.name in processors]


def layers_for(layers: list[AttentionLayer], topology: Topology, role: Role, cross: bool) -> list[AttentionLayer]:
    """The self- (``cross=False``) or cross-attention layers of the transformer blocks ``role`` names."""
    blocks = topology.select(role)
    return [layer for layer in layers if layer.is_cross == cross and layer.plays(blocks)]


class AttentionControl(LoopHooks):
    """What the processors consult; subclasses override the parts they need.

    As a :class:`LoopHooks` it follows the loop's step; ``num_branches`` is the number of branches of the
    batch, so a row ``r`` belongs to branch ``r % num_branches``.
    """

    def __init__(self, num_branches: int) -> None:
        self.num_branches = num_branches
        self.step = 0
        self.num_steps = 1
        #: layer (or module) name -> number of calls in which the control acted on it
        self.touched: Counter[str] = Counter()
        #: the UNet's topology, set by :func:`controlled_attention` before :meth:`bind`
        self.topology: Topology | None = None

    def begin(self, num_steps: int) -> None:
        self.num_steps = num_steps

    def step_begin(self, step: Step) -> None:
        self.step = step.index

    def until(self, fraction: float) -> bool:
        """Whether the current step lies in the first ``fraction`` of the steps (as ``int(fraction * N)``)."""
        return self.step < int(fraction * self.num_steps)

    def bind(self, layers: list[AttentionLayer]) -> None:
        """Called once with the UNet's layers before the processors are installed (:attr:`topology` is set)."""

    def select(self, layer: AttentionLayer) -> bool:
        """Whether ``layer`` gets a controlled processor at all."""
        return True

    def active(self, layer: AttentionLayer) -> bool:
        """Whether the control acts on ``layer`` at the current step."""
        return False

    def needs_probs(self, layer: AttentionLayer) -> bool:
        """Whether the attention probabilities must be materialised for ``edit_probs``."""
        return False

    def edit_qkv(self, layer: AttentionLayer, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return q, k, v

    def edit_probs(self, layer: AttentionLayer, probs: torch.Tensor) -> torch.Tensor:
        return probs

    def rows_of(self, branch: int, rows: int) -> list[int]:
        """Indices of ``branch``'s rows (one per classifier-free-guidance half) in a batch of ``rows``."""
        return list(range(branch, rows, self.num_branches))


class ControlledAttnProcessor(AttnProcessor2_0):
    """``AttnProcessor2_0`` that lets an :class:`AttentionControl` rewrite q/k/v or the probabilities."""

    def __init__(self, control: AttentionControl, layer: AttentionLayer) -> None:
        super().__init__()
        self.control = control
        self.layer = layer

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args,
                 **kwargs) -> torch.Tensor:
        control, layer = self.control, self.layer
        unsupported = attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3
        if unsupported or not control.active(layer):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        control.touched[layer.name] += 1
        # 1. Project to queries, keys and values: (rows, heads, tokens, head_dim)
        rows = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = k.shape[-1] // attn.heads
        q, k, v = (z.view(rows, -1, attn.heads, head_dim).transpose(1, 2) for z in (q, k, v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], rows)
            attention_mask = attention_mask.view(rows, attn.heads, -1, attention_mask.shape[-1])
        # 2. The control may rewrite them (MasaCtrl, Plug-and-Play)
        q, k, v = control.edit_qkv(layer, q, k, v)
        # 3. Attention: probabilities only where the control reads or rewrites them
        if control.needs_probs(layer):
            scores = (q @ k.transpose(-1, -2)).float() * attn.scale
            if attention_mask is not None:
                scores = scores + attention_mask.float()
            probs = control.edit_probs(layer, scores.softmax(dim=-1))
            out = probs.to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=attn.scale)
        # 4. Output projection, as AttnProcessor2_0
        out = out.transpose(1, 2).reshape(rows, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


_OBSERVERS: list[list[AttentionControl]] = []


@contextmanager
def observe_controls() -> Iterator[list[AttentionControl]]:
    """Collect every control :func:`controlled_attention` installs while open (read ``control.touched`` after)."""
    seen: list[AttentionControl] = []
    _OBSERVERS.append(seen)
    try:
        yield seen
    finally:
        _OBSERVERS.remove(seen)


@contextmanager
def controlled_attention(unet: torch.nn.Module, control: AttentionControl) -> Iterator[list[AttentionLayer]]:
    """Install controlled processors on the layers ``control`` selects; restore the originals on exit."""
    original = dict(unet.attn_processors)
    control.topology = Topology.of(unet)
    layers = unet_attention_layers(unet, control.topology)
    control.bind(layers)
    processors = dict(original)
    for layer in layers:
        if control.select(layer):
            processors[layer.name] = ControlledAttnProcessor(control, layer)
    for seen in _OBSERVERS:
        seen.append(control)
    unet.set_attn_processor(processors)
    try:
        yield layers
    finally:
        unet.set_attn_processor(dict(original))
