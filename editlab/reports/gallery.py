"""A self-contained static HTML gallery of a run or of the runs of one experiment on one dataset.

One row per sample: the sample's id, task type and prompts, then source | mask | each method's edit (with its
per-sample metric values and the diagnostic images the method returned, e.g. an inferred mask, a cross-attention
map or an inversion's reconstruction) | ground truth. Filters by task type and by method run in the page
itself. Images are embedded as thumbnails (data URIs); each edit links to its full-size PNG in the results
folder. Source, mask and ground truth come from the dataset named in the run's ``config.yaml`` (no model is
loaded); when it cannot be opened the gallery shows the edits alone. All dataset text is escaped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from PIL import Image

from editlab.files import atomic_write_text
from editlab.reports.html import image_data_uri, render

log = logging.getLogger("editlab")



class _Datasets:
    """Datasets named in run configs, built once each; None when one cannot be built here."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def for_run(self, run_dir: Path) -> Any:
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.exists():
            return None
        from omegaconf import OmegaConf

        try:
            node = OmegaConf.to_container(OmegaConf.load(cfg_path).get("dataset"), resolve=True)
        except Exception as err:  # an unreadable config only costs the gallery its source images
            log.warning("gallery: cannot read %s: %s", cfg_path, err)
            return None
        key = json.dumps(node, sort_keys=True, default=str)
        if key not in self._cache:
            from hydra.utils import instantiate

            try:  # as the runner builds it: ``name`` is a label, not an argument
                self._cache[key] = instantiate({k: v for k, v in node.items() if k not in ("name", "backbone")})
            except Exception as err:
                log.warning("gallery: dataset of %s cannot be opened (%s); edits are shown alone", run_dir, err)
                self._cache[key] = None
        return self._cache[key]


def _metric_values(rec: dict[str, Any], definitions: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for name, v in sorted((rec.get("metrics") or {}).items()):
        if v is None:
            continue
        d = definitions.get(name, {})
        arrow = "↑" if d.get("higher_is_better", True) else "↓"
        value = v * d.get("scale", 1.0)
        out.append((f"{name} {arrow}", f"{value:.4g}"))
    return out


def _thumb(path: Path, size: int) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()
            return image_data_uri(im.convert("RGB") if im.mode not in ("RGB", "L") else im, size)
    except OSError:
        return None


def gallery_rows(runs: list[Any], out_dir: Path, thumb: int = 192, max_samples: int | None = None,
                 datasets: _Datasets | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(methods, rows) for the template; ``runs`` are :class:`editlab.bench.tables.LoadedRun`."""
    datasets = datasets or _Datasets()
    methods = [{"key": f"m{i}", "label": run.label, "strategy": run.strategy} for i, run in enumerate(runs)]
    by_run = [{rec["id"]: rec for rec in run.records} for run in runs]
    ids: list[str] = list(dict.fromkeys(rid for run in runs for rid in (r["id"] for r in run.records)))
    if max_samples is not None:
        ids = ids[:max_samples]
    rows = []
    for sid in ids:
        recs = [m.get(sid) for m in by_run]
        first = next((r for r in recs if r is not None and "source_prompt" in r), None) or next(
            r for r in recs if r is not None)
        row: dict[str, Any] = {"id": sid, "task": first.get("task_type"), "source_prompt": first.get("source_prompt"),
                               "target_prompt": first.get("target_prompt"), "instruction": first.get("instruction"),
                               "source": None, "mask": None, "target": None, "cells": []}
        run0 = next(run for run, r in zip(runs, recs) if r is not None)
        dataset = datasets.for_run(run0.run_dir)
        if dataset is not None:
            try:
                sample = dataset.load(sid)
                row["source"] = image_data_uri(sample.source_image.convert("RGB"), thumb)
                if sample.mask is not None:
                    row["mask"] = image_data_uri(sample.mask.convert("L"), thumb)
                if sample.target_image is not None:
                    row["target"] = image_data_uri(sample.target_image.convert("RGB"), thumb)
            except Exception as err:  # a broken sample still gets its row
                log.debug("gallery: sample %s not loadable: %s", sid, err)
        row["chained"] = any(r is not None and r.get("chain_from") for r in recs)
        for method, run, rec, own in zip(methods, runs, recs, by_run):
            cell: dict[str, Any] = {"key": method["key"], "image": None, "status": None, "metrics": [], "extras": []}
            if rec is not None:
                cell["status"], cell["error"] = rec.get("status"), rec.get("error")
                cell["unscored"] = rec.get("scored") is False
                if rec.get("status") == "ok" and rec.get("image"):
                    cell["image"] = _thumb(run.run_dir / rec["image"], thumb)
                    cell["href"] = os.path.relpath(run.run_dir / rec["image"], out_dir)
                    cell["metrics"] = _metric_values(rec, run.definitions())
                previous = own.get(rec.get("chain_from") or "")
                if previous is not None and previous.get("image"):  # what this method actually edited
                    uri = _thumb(run.run_dir / previous["image"], thumb)
                    if uri is not None:
                        cell["extras"].append({"name": f"edited from {rec['chain_from']}", "image": uri,
                                               "href": os.path.relpath(run.run_dir / previous["image"], out_dir)})
                for name, path in sorted((rec.get("extras") or {}).items()):
                    uri = _thumb(run.run_dir / path, thumb)
                    if uri is not None:
                        cell["extras"].append({"name": name, "image": uri,
                                               "href": os.path.relpath(run.run_dir / path, out_dir)})
            row["cells"].append(cell)
        rows.append(row)
    return methods, rows


def render_gallery(runs: list[Any], out_path: Path, thumb: int = 192, max_samples: int | None = None,
                   title: str | None = None) -> Path:
    """Write the gallery page of ``runs`` (one dataset) to ``out_path``."""
    out_path = Path(out_path)
    methods, rows = gallery_rows(runs, out_path.parent, thumb, max_samples)
    datasets = sorted({run.dataset for run in runs})
    experiments = sorted({str(run.results.get("experiment", "?")) for run in runs})
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["task"]))
    from editlab.types import TaskType

    order = {t.value: i for i, t in enumerate(TaskType)}
    tasks.sort(key=lambda t: (order.get(t, len(order)), t))
    total = len({rec["id"] for run in runs for rec in run.records})
    subtitle = (f"dataset {', '.join(datasets)} · experiment {', '.join(experiments)} · {len(runs)} method(s) · "
                f"{len(rows)} of {total} samples · click an edit for the full-size image")
    html = render("gallery.html", title=title or f"Gallery: {', '.join(datasets)}", subtitle=subtitle, methods=methods,
                  rows=rows, tasks=tasks, thumb=thumb)
    atomic_write_text(out_path, html)
    return out_path
