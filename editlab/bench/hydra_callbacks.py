"""Hydra callback: after a multirun, print and write the comparison table over all of its grid points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class TablesCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from editlab.bench.tables import render_tables

        sweep_dir = Path(config.hydra.sweep.dir)
        run_dirs = sorted({Path(p.read_text().strip()) for p in sweep_dir.rglob("run_dir.txt")})
        run_dirs = [d for d in run_dirs if (d / "results.json").exists()]
        if not run_dirs:
            return
        by_dataset: dict[Path, list[Path]] = {}
        for d in run_dirs:
            by_dataset.setdefault(d.parent, []).append(d)
        for dataset_dir, runs in by_dataset.items():
            md = render_tables(runs, out_dir=dataset_dir)["markdown"]
            print(f"\n=== {dataset_dir} ({len(runs)} runs)\n{md}\ntables written to {dataset_dir}/table.{{md,csv,tex}}")
