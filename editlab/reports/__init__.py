"""Reports from stored results alone (no model is loaded): what researchers and adopters read.

:func:`render_report` is what ``editlab report`` runs: the comparison tables (:mod:`editlab.bench.tables`, with
the paper comparison of :mod:`editlab.reports.paper`), figures (:mod:`editlab.reports.plots`), an HTML gallery
per dataset (:mod:`editlab.reports.gallery`), the pilot report (:mod:`editlab.reports.pilot`) and human
evaluation pages and scores (:mod:`editlab.reports.human`), plus an ``index.html`` linking everything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editlab.files import atomic_write_text, safe_name


@dataclass
class ReportOptions:
    """What ``editlab report`` renders besides the tables."""

    task_metric: str | None = None
    plots: bool = True
    gallery: bool = True
    gallery_max_samples: int | None = None
    thumb: int = 192
    pilot: bool = True
    price_per_hour: float = 2.0
    currency: str = "USD"
    manual_minutes: float | None = None
    review_minutes: float = 0.0
    accept: str | None = None
    export_rating_page: str | None = None
    rating_items: int = 100
    ratings: list[Path] = field(default_factory=list)
    rating_key: Path | None = None
    #: How the tables compare methods (failure policy, correction, alpha): editlab.bench.tables.TableOptions.
    table: Any = None


def _by_dataset(runs: list[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for run in runs:
        groups.setdefault(run.dataset, []).append(run)
    return groups


def render_report(run_dirs: list[Path], out_dir: Path, options: ReportOptions | None = None) -> dict[str, Any]:
    """Render every report over ``run_dirs`` into ``out_dir``; returns the table outputs and written files."""
    from editlab.bench.tables import build_model, render_model

    options = options or ReportOptions()
    out_dir = Path(out_dir)
    model = build_model(run_dirs, options.table)
    tables = render_model(model, out_dir, options.task_metric)
    written: dict[str, list[Path]] = {"tables": sorted(p for p in out_dir.glob("table*") if p.is_file())}
    written["tables"] += [out_dir / n for n in ("paired.csv", "paper_comparison.md") if (out_dir / n).exists()]
    groups = _by_dataset(model.runs)
    several = len(groups) > 1

    def sub_model(runs: list[Any]) -> Any:
        return model if not several else build_model(runs, options.table)

    if options.plots:
        from editlab.reports.plots import render_plots

        written["plots"] = []
        for dataset, runs in groups.items():
            folder = out_dir / "plots" / (safe_name(dataset) if several else "")
            written["plots"] += [p for p in render_plots(sub_model(runs), folder) if p.suffix == ".png"]
    if options.gallery:
        from editlab.reports.gallery import render_gallery

        written["gallery"] = [
            render_gallery(runs, out_dir / (f"gallery_{safe_name(dataset)}.html" if several else "gallery.html"),
                           thumb=options.thumb, max_samples=options.gallery_max_samples)
            for dataset, runs in groups.items()]
    human = None
    key_path = None
    if options.ratings:
        from editlab.reports.human import find_key

        key_path = find_key(options.ratings, options.rating_key, out_dir / "human")
        if options.accept and options.accept.startswith("human"):
            human = human_overall(options.ratings, key_path)
    if options.pilot:
        from editlab.reports.pilot import render_pilot

        paths = render_pilot(model, out_dir, options.price_per_hour, options.currency, options.manual_minutes,
                             review_minutes=options.review_minutes, accept=options.accept, human=human)
        written["pilot"] = [paths["md"], paths["html"]]
    from editlab.reports.judges import judge_columns, render_judges

    if judge_columns(model.runs):
        written["judges"] = list(render_judges(model.runs, out_dir, options.ratings, key_path).values())
    if options.export_rating_page:
        from editlab.reports.human import export_rating_page

        written["rating page"] = []
        for dataset, runs in groups.items():
            folder = out_dir / "human" / (safe_name(dataset) if several else "")
            paths = export_rating_page(runs, folder, options.export_rating_page, options.rating_items)
            written["rating page"] += [paths["page"], paths["key"]]
    if options.ratings:
        from editlab.reports.human import analyse_ratings, render_human

        paths = render_human(analyse_ratings(options.ratings, key_path), out_dir / "human")
        written["human evaluation"] = [paths["md"], paths["html"], paths["scores"]]
    written["index"] = [write_index(out_dir, written)]
    return {"tables": tables, "files": written}


def human_overall(rating_files: list[Path], key_path: Path) -> dict[tuple[str, str], float]:
    """Mean over raters of the Likert overall score (mean of the criteria) per (method label, sample id)."""
    import json

    from editlab.reports.human import CRITERIA, likert_frame, load_ratings

    key = json.loads(Path(key_path).read_text())
    if key["mode"] != "likert":
        raise ValueError("--accept human>=T needs Likert ratings (a pairwise page gives no per-edit verdict)")
    ratings = load_ratings(rating_files)
    lf = likert_frame(ratings[ratings["page_id"] == key["page_id"]], key)
    lf["overall"] = lf[list(CRITERIA)].mean(axis=1)
    return {k: float(v) for k, v in lf.groupby(["method", "sample_id"])["overall"].mean().items()}


def write_index(out_dir: Path, written: dict[str, list[Path]]) -> Path:
    """``index.html`` linking every written report file."""
    from editlab.reports.html import esc, page

    parts = []
    for section, paths in written.items():
        if not paths:
            continue
        links = "".join(f'<li><a href="{esc(os.path.relpath(p, out_dir))}">{esc(os.path.relpath(p, out_dir))}</a></li>'
                        for p in paths)
        parts.append(f"<h2>{esc(section)}</h2><ul>{links}</ul>")
    path = out_dir / "index.html"
    atomic_write_text(path, page("editlab report", "".join(parts)))
    return path
