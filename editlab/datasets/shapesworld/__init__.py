"""ShapesWorld: editlab's procedural editing world with exact ground truth for every task type."""

from editlab.datasets.shapesworld.dataset import SPLITS, ShapesWorldDataset
from editlab.datasets.shapesworld.oracle import (
    Detected,
    Reading,
    analyse,
    attribute_accuracy,
    edit_accuracy,
    preservation,
    scene_accuracy,
)
from editlab.datasets.shapesworld.tasks import WorldEdit, make_edit, train_edit_batch
from editlab.datasets.shapesworld.world import (
    BACKGROUNDS,
    COLORS,
    IMAGE_SIZE,
    SHAPES,
    STYLES,
    Obj,
    Scene,
    caption,
    object_mask,
    render,
    sample_scene,
    train_batch,
    vocabulary,
)

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "IMAGE_SIZE",
    "SHAPES",
    "SPLITS",
    "STYLES",
    "Detected",
    "Obj",
    "Reading",
    "Scene",
    "ShapesWorldDataset",
    "WorldEdit",
    "analyse",
    "attribute_accuracy",
    "caption",
    "edit_accuracy",
    "make_edit",
    "object_mask",
    "preservation",
    "render",
    "sample_scene",
    "scene_accuracy",
    "train_batch",
    "train_edit_batch",
    "vocabulary",
]
