"""Layer roles resolved on a UNet's topology: on SD 1.5's topology every method's choice is the official index."""

from __future__ import annotations

import pytest
import torch

from editlab.methods.editors.attention import AttentionControl, controlled_attention, unet_attention_layers
from editlab.methods.editors.masactrl import MutualSelfAttentionControl
from editlab.methods.editors.p2p import LocalBlend
from editlab.methods.editors.pnp import ATTENTION_BLOCKS, FEATURE_BLOCK, PnPControl, role
from editlab.methods.ledits_pp import attention_masks_unsupported, mask_layers
from editlab.models.backbone import toy_backbone
from editlab.models.topology import Role, Topology, sd15_topology
from editlab.models.toy_variants import sd15_toy_unet

# The official indices (SD 1.5), as the official code writes them
PNP_FEATURE = "up_blocks.1.resnets.1"  # pnp_utils.register_conv_control_efficient
PNP_ATTENTION = [f"up_blocks.{r}.attentions.{b}.transformer_blocks.0.attn1.processor"  # res_dict {1: [1, 2], 2:
                 for r, blocks in ((1, (1, 2)), (2, (0, 1, 2)), (3, (0, 1, 2))) for b in blocks]  # [0,1,2], 3: [0,1,2]}
MASACTRL = [f"up_blocks.{r}.attentions.{b}.transformer_blocks.0.attn1.processor"  # layer_idx range(10, 16)
            for r in (2, 3) for b in (0, 1, 2)]
BLEND_16 = ([f"down_blocks.2.attentions.{b}.transformer_blocks.0.attn2.processor" for b in (0, 1)]  # down_cross[2:4]
            + [f"up_blocks.1.attentions.{b}.transformer_blocks.0.attn2.processor" for b in (0, 1, 2)])  # up_cross[:3]


@pytest.fixture(scope="module")
def sd15_unet():
    return sd15_toy_unet(seed=0)


def test_sd15_topology_counts_and_orders(sd15_unet) -> None:
    topo = sd15_topology()
    assert len(topo.transformers) == 16 and len(topo.resnets) == 22
    assert [b.downscale for b in topo.transformers] == [1, 1, 2, 2, 4, 4, 8, 4, 4, 4, 2, 2, 2, 1, 1, 1]
    assert topo.transformers[10].path == "up_blocks.2.attentions.0.transformer_blocks.0"
    # the mid block runs resnets[0], attentions[0], resnets[1]
    mid = [b for b in topo.resnets if b.place == "mid"]
    assert [b.order for b in mid] == [8, 9] and topo.transformers[6].place == "mid"
    # the toy backbone's UNet has exactly SD 1.5's topology
    toy = Topology.of(sd15_unet)
    assert [(b.path, b.downscale, b.order) for b in toy.transformers + toy.resnets] == \
        [(b.path, b.downscale, b.order) for b in topo.transformers + topo.resnets]
    assert sorted(layer.name for layer in unet_attention_layers(sd15_unet)) == sorted(sd15_unet.attn_processors)


def test_pnp_roles_resolve_to_the_official_layers(sd15_unet) -> None:
    topo = Topology.of(sd15_unet)
    assert [b.path for b in topo.select(role("resnet", FEATURE_BLOCK))] == [PNP_FEATURE]
    control = PnPControl(0.8, 0.5, role("transformer", ATTENTION_BLOCKS))
    with controlled_attention(sd15_unet, control):
        pass
    assert sorted(control.chosen) == sorted(PNP_ATTENTION)


def test_masactrl_start_layer_resolves_by_role(sd15_unet) -> None:
    control = MutualSelfAttentionControl(4 / 50, 10)
    with controlled_attention(sd15_unet, control) as layers:
        chosen = [layer.name for layer in layers if control.select(layer)]
    assert control.first_layer == 10 and chosen == MASACTRL
    # on a smaller UNet (attention at /1, /2, /4, one layer per block) block 10 of SD 1.5, the decoder's first block
    # at latent / 2, is the small UNet's first decoder block at latent / 2
    small = Topology.of(toy_backbone(device="cpu").unet)
    first = small.transformers[small.translate(10, sd15_topology())]
    assert (first.place, first.downscale, first.index) == ("up", 2, 0)
    assert small.translate(16, sd15_topology()) == len(small.transformers)  # past the last: nothing controlled
    assert sd15_topology().translate(7, sd15_topology()) == 7


def test_local_blend_and_ledits_maps_are_16x16_on_sd15(sd15_unet) -> None:
    layers = unet_attention_layers(sd15_unet)
    blend = LocalBlend(torch.zeros(2, 77), downscale=4, threshold=0.3, start=0.2, latent_side=64)
    level = blend.pick_level({layer.downscale for layer in layers if layer.is_cross})
    assert level == 4 and 64 // level == 16
    assert [layer.name for layer in layers if layer.is_cross and layer.downscale == level] == BLEND_16
    assert mask_layers(sd15_unet) == BLEND_16  # LEDITS++: image / 32 = latent / 4, encoder and decoder
    assert attention_masks_unsupported(sd15_unet, 64) is None
    assert "not divisible by 4" in attention_masks_unsupported(sd15_unet, 30)


def test_roles_fail_clearly_and_controls_count_what_they_touch(sd15_unet) -> None:
    topo = Topology.of(sd15_unet)
    message = r"no block for the role 'transformer decoder at latent/8'.*latent/\[1, 2, 4\]"
    with pytest.raises(ValueError, match=message):
        topo.select(Role("transformer", "up", (8,)))
    with pytest.raises(ValueError, match="unknown place"):
        Role("transformer", "side")

    class Everything(AttentionControl):
        def active(self, layer):
            return layer.is_cross

    control = Everything(num_branches=1)
    with controlled_attention(sd15_unet, control):
        sd15_unet(torch.zeros(1, 4, 16, 16), 10, encoder_hidden_states=torch.zeros(1, 77, 32))
    assert set(control.touched) == {n for n in sd15_unet.attn_processors if ".attn2." in n}
    assert all(count == 1 for count in control.touched.values())
