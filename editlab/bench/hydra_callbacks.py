"""Hydra callback: after a multirun, print the comparison table over all of its grid points and render the
full report (tables, paper comparison, plots, HTML gallery, pilot report) beside the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class TablesCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from editlab.bench.runner import table_options
        from editlab.reports import ReportOptions, render_report

        sweep_dir = Path(config.hydra.sweep.dir)
        run_dirs = sorted({Path(p.read_text().strip()) for p in sweep_dir.rglob("run_dir.txt")})
        run_dirs = [d for d in run_dirs if (d / "results.json").exists()]
        if not run_dirs:
            return
        by_dataset: dict[Path, list[Path]] = {}
        for d in run_dirs:
            by_dataset.setdefault(d.parent, []).append(d)
        for dataset_dir, runs in by_dataset.items():
            tables = render_report(runs, dataset_dir, ReportOptions(table=table_options(config)))["tables"]
            print(f"\n=== {dataset_dir} ({len(runs)} runs)\n{tables['terminal']}\nreport written to "
                  f"{dataset_dir}/index.html (full tables in table.md, plots, gallery, pilot report)")
