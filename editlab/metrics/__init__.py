"""Metrics: each is a torchmetrics ``Metric`` that keeps per-sample values (see :mod:`.base`)."""

from editlab.metrics.base import EditBatch, EditMetric, MetricUnavailable

__all__ = ["EditBatch", "EditMetric", "MetricUnavailable"]
