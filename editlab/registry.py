"""Name -> class registries with lazy ``"module:Class"`` entries.

Nothing heavy is imported until a name is looked up, so ``editlab list`` and config composition stay fast,
and an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import importlib
from typing import Any


class Registry:
    """A named mapping from short names to lazily imported objects."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def path(self, name: str) -> str:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} '{name}', available: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        module, _, attr = self.path(name).partition(":")
        return getattr(importlib.import_module(module), attr)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


METHODS = Registry(
    "method",
    {
        "sdedit": "editlab.methods.sdedit:SDEdit",
        "ddim_swap": "editlab.methods.ddim_swap:DDIMSwap",
        "diffedit": "editlab.methods.diffedit:DiffEdit",
        "blended_latent": "editlab.methods.blended_latent:BlendedLatentDiffusion",
        "inpaint": "editlab.methods.inpaint:SDInpaint",
        "instruct_pix2pix": "editlab.methods.instruct_pix2pix:InstructPix2Pix",
        "ledits_pp": "editlab.methods.ledits_pp:LEditsPP",
        "paint_by_example": "editlab.methods.paint_by_example:PaintByExample",
        "drag": "editlab.methods.drag:SDEDrag",
        "imagic": "editlab.methods.imagic:Imagic",
        "edit": "editlab.methods.inversion_editing:InversionEditing",
        "outputs": "editlab.methods.outputs:ImportedOutputs",
        "instruct": "editlab.methods.instruct:Instruct",
        "flowedit": "editlab.methods.flowedit:FlowEdit",
        "rf_inversion": "editlab.methods.rf_inversion:RFInversion",
    },
)

INVERSIONS = Registry(
    "inversion",
    {
        "ddim": "editlab.methods.inversion.ddim:DDIMInversion",
        "nti": "editlab.methods.inversion.nti:NullTextInversion",
        "npi": "editlab.methods.inversion.npi:NegativePromptInversion",
        "direct": "editlab.methods.inversion.direct:DirectInversion",
        "edict": "editlab.methods.inversion.edict:EDICTInversion",
        "ddpm": "editlab.methods.inversion.ddpm:DDPMInversion",
    },
)

EDITORS = Registry(
    "editor",
    {
        "swap": "editlab.methods.editors.swap:PromptSwap",
        "p2p": "editlab.methods.editors.p2p:PromptToPrompt",
        "masactrl": "editlab.methods.editors.masactrl:MasaCtrl",
        "pnp": "editlab.methods.editors.pnp:PlugAndPlay",
        "pix2pix_zero": "editlab.methods.editors.pix2pix_zero:Pix2PixZero",
    },
)

DATASETS = Registry(
    "dataset",
    {
        "shapesworld": "editlab.datasets.shapesworld:ShapesWorldDataset",
        "folder": "editlab.datasets.folder:FolderDataset",
        "pie_bench": "editlab.datasets.pie_bench:PIEBenchDataset",
        "editeval": "editlab.datasets.editeval:EditEvalDataset",
        "magicbrush": "editlab.datasets.magicbrush:MagicBrushDataset",
        "imagenhub_text": "editlab.datasets.imagenhub:ImagenHubTextDataset",
        "imagenhub_mask": "editlab.datasets.imagenhub:ImagenHubMaskDataset",
        "tedbench": "editlab.datasets.tedbench:TEdBenchDataset",
        "gedit": "editlab.datasets.gedit:GEditBenchDataset",
        "imgedit": "editlab.datasets.imgedit:ImgEditDataset",
        "imgedit_uge": "editlab.datasets.imgedit:ImgEditDataset",
        "kris": "editlab.datasets.kris:KRISBenchDataset",
        "rise": "editlab.datasets.risebench:RISEBenchDataset",
        "emu_edit": "editlab.datasets.emu_edit:EmuEditDataset",
    },
)

METRICS = Registry(
    "metric",
    {
        "clip_score": "editlab.metrics.clip_score:CLIPScoreMetric",
        "clip_edited": "editlab.metrics.clip_score:CLIPEditedRegion",
        "clip_dir": "editlab.metrics.clip_score:CLIPDirectional",
        "clip_i": "editlab.metrics.clip_score:CLIPImageSimilarity",
        "structure": "editlab.metrics.structure:StructureDistance",
        "lpips": "editlab.metrics.lpips_metric:LPIPSMetric",
        "bg_psnr": "editlab.metrics.masked:BackgroundPSNR",
        "bg_mse": "editlab.metrics.masked:BackgroundMSE",
        "bg_ssim": "editlab.metrics.masked:BackgroundSSIM",
        "gt_psnr": "editlab.metrics.fidelity:TargetPSNR",
        "gt_ssim": "editlab.metrics.fidelity:TargetSSIM",
        "edit_acc": "editlab.metrics.world:EditAccuracy",
        "preservation": "editlab.metrics.world:Preservation",
        "fid_kid": "editlab.metrics.distribution:DistributionMetric",
        "pie_psnr_unedit": "editlab.metrics.pie:PIEPSNR",
        "pie_mse_unedit": "editlab.metrics.pie:PIEMSE",
        "pie_ssim_unedit": "editlab.metrics.pie:PIESSIM",
        "pie_lpips_unedit": "editlab.metrics.pie:PIELPIPS",
        "pie_clip_whole": "editlab.metrics.pie:PIECLIPWhole",
        "pie_clip_edited": "editlab.metrics.pie:PIECLIPEdited",
        "pie_structure": "editlab.metrics.pie:PIEStructure",
        "pixel_distance": "editlab.metrics.similarity:PixelDistance",
        "dino": "editlab.metrics.similarity:DINOSimilarity",
        "clip_t": "editlab.metrics.similarity:CLIPTextSimilarity",
        "src_psnr": "editlab.metrics.similarity:SourcePSNR",
        "src_ssim": "editlab.metrics.similarity:SourceSSIM",
        "judge": "editlab.metrics.judge:JudgeMetric",
    },
)

BACKBONES = Registry(
    "backbone",
    {
        "shapesworld": "editlab.models.backbone:load_backbone",
        "toy": "editlab.models.backbone:toy_backbone",
        "sd14": "editlab.models.backbone:load_backbone",
        "toy_sd15": "editlab.models.toy_variants:toy_sd15_backbone",
        "sd15": "editlab.models.backbone:load_backbone",
        "shapesworld_inpaint": "editlab.models.backbone:load_backbone",
        "shapesworld_ip2p": "editlab.models.backbone:load_backbone",
        "sd15_inpaint": "editlab.models.backbone:load_backbone",
        "instruct_pix2pix": "editlab.models.backbone:load_backbone",
        "magicbrush": "editlab.models.backbone:load_backbone",
        "sdxl": "editlab.models.backbone:load_backbone",
        "sdxl_inpaint": "editlab.models.backbone:load_backbone",
        "sdxl_instruct_pix2pix": "editlab.models.backbone:load_backbone",
        "sd3": "editlab.models.backbone:load_backbone",
        "flux": "editlab.models.backbone:load_backbone",
        "flux_fill": "editlab.models.backbone:load_backbone",
        "flux_kontext": "editlab.models.backbone:load_backbone",
        "qwen_image_edit": "editlab.models.backbone:load_backbone",
        "qwen_image_edit_plus": "editlab.models.backbone:load_backbone",
        "shapesworld_flow": "editlab.models.backbone:load_backbone",
        **{f"toy_{f}": "editlab.models.toy_families:toy_family_backbone" for f in (
            "sdxl", "sdxl_ip2p", "sdxl_inpaint", "sd3", "flux", "flux_fill", "flux_kontext", "qwen_image_edit",
            "qwen_image_edit_plus")},
    },
)
