"""Datasets: each yields :class:`editlab.types.Sample` objects lazily (see :mod:`.base`)."""

from editlab.datasets.base import EditDataset

__all__ = ["EditDataset"]
