"""LPIPS (Zhang et al., 2018) between the source and the edited image, via the ``lpips`` package.

The package ships its calibrated linear layers but not the ImageNet backbones (AlexNet / VGG / SqueezeNet
from torchvision), which are downloaded on first use. Offline, editlab looks for them in torch's hub cache
and, when they are missing, says so and skips the metric. ``allow_random_backbone=True`` builds LPIPS on a
randomly initialised backbone instead; the column is then named ``lpips_<net>_randbackbone`` everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from editlab.metrics.base import EditBatch, EditMetric, MetricUnavailable

_WEIGHTS = {
    "alex": ("AlexNet_Weights", "IMAGENET1K_V1"),
    "vgg": ("VGG16_Weights", "IMAGENET1K_V1"),
    "squeeze": ("SqueezeNet1_1_Weights", "IMAGENET1K_V1"),
}


def backbone_weights_file(net: str) -> Path:
    """Where torchvision keeps the ImageNet weights LPIPS(net) needs."""
    import torchvision.models as tvm

    enum_name, member = _WEIGHTS[net]
    url = getattr(getattr(tvm, enum_name), member).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


class LPIPSMetric(EditMetric):
    name = "lpips"
    definition = "LPIPS (lpips package v0.1) between the source and the edited image, inputs scaled to [-1, 1]"
    higher_is_better = False

    def __init__(self, net: str = "alex", allow_random_backbone: bool = False, region: str = "all",
                 reference: str = "source", **kwargs: Any) -> None:
        """``region="background"`` averages the spatial LPIPS map over pixels outside the edit mask;
        ``reference="target"`` compares with the ground-truth target instead of the source (fidelity)."""
        super().__init__(**kwargs)
        if region not in ("all", "background") or reference not in ("source", "target"):
            raise ValueError(f"region must be all|background and reference source|target, got {region}, {reference}")
        self.region, self.reference = region, reference
        if net not in _WEIGHTS:
            raise ValueError(f"unknown LPIPS net '{net}', available: {', '.join(_WEIGHTS)}")
        import lpips

        weights = backbone_weights_file(net)
        self.net = net
        self.random_backbone = not weights.exists()
        if self.random_backbone and not allow_random_backbone:
            raise MetricUnavailable(
                f"LPIPS({net}) needs torchvision's ImageNet weights at {weights}, which are not present and cannot be "
                f"downloaded offline. Copy that file there, or set allow_random_backbone=true to use LPIPS on a random "
                f"backbone (reported as lpips_{net}_randbackbone)."
            )
        prefix = {"all": "", "background": "bg_"}[region] + ("gt_" if reference == "target" else "")
        self.name = f"{prefix}lpips_{net}" + ("_randbackbone" if self.random_backbone else "")
        self.definition = (
            f"lpips package v0.1 ({net}{', RANDOM backbone' if self.random_backbone else ''}) between the edit and the "
            f"{reference} image, inputs scaled to [-1, 1]"
            + ("; spatial map averaged over pixels outside the edit mask" if region == "background" else "")
        )
        if self.random_backbone:
            torch.manual_seed(0)
        self.model = lpips.LPIPS(net=net, pnet_rand=self.random_backbone, spatial=region == "background",
                                 verbose=False).eval()

    @torch.no_grad()
    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        ref = batch.source if self.reference == "source" else batch.target
        nan = torch.full((len(batch),), float("nan"))
        if ref is None or (self.region == "background" and batch.mask is None):
            return nan
        out = self.model(batch.edited * 2 - 1, ref * 2 - 1)
        if self.region == "all":
            return out.flatten()
        keep = (batch.mask < 0.5).float()
        n = keep.sum(dim=(1, 2, 3))
        return torch.where(n > 0, (out * keep).sum(dim=(1, 2, 3)) / n.clamp(min=1), nan)

    def extra_description(self) -> dict[str, Any]:
        return {"backbone": f"{self.net}{'-random' if self.random_backbone else '-imagenet'}"}

    def weight_files(self) -> list[Path]:
        import lpips

        linear = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{self.net}.pth"
        backbone = [] if self.random_backbone else [backbone_weights_file(self.net)]
        return [*backbone, linear]
