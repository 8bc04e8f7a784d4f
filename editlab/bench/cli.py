"""The ``editlab`` command: ``run`` (a Hydra app), ``list``, ``report`` and ``train``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from editlab import ROOT

CONFIG_DIR = ROOT / "configs"
TRAINERS = {
    "vae": "editlab.train.vae",
    "sd": "editlab.train.sd",
    "inpaint": "editlab.train.inpaint",
    "ip2p": "editlab.train.ip2p",
    "clip": "editlab.train.clip",
    "flow": "editlab.train.flow",
}


def _hydra_run(argv: list[str]) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from editlab.bench.runner import run
    from editlab.files import atomic_write_text

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        outcome = run(cfg)
        atomic_write_text(Path(HydraConfig.get().runtime.output_dir) / "run_dir.txt", str(outcome.run_dir))
        print(f"\nresults: {outcome.run_dir}  (edited {outcome.edited}, reused {outcome.reused} from cache)")

    sys.argv = [sys.argv[0], *default_grid(argv)]
    _main()


GRID_KEYS = ("method", "inversion", "editor", "experiment")


def default_grid(argv: list[str]) -> list[str]:
    """Without a key that chooses what to run (method, inversion, editor, experiment), run the default grid."""
    keys = [a.lstrip("+~").split("=", 1)[0] for a in argv if "=" in a]
    if any(k in GRID_KEYS for k in keys):
        return argv
    return [*argv, "experiment=default"]


def _list() -> None:
    from omegaconf import OmegaConf

    from editlab.methods.presets import describe_presets
    from editlab.registry import BACKBONES, DATASETS, EDITORS, INVERSIONS, METHODS, METRICS

    print("methods (learning strategy | conditions | tasks), with backbone families and paper presets:")
    for name in METHODS.names():
        cls = METHODS.get(name)
        tax = cls.taxonomy
        tasks = "all" if len(tax.tasks) == 12 else ", ".join(t.value for t in tax.tasks)
        conds = ", ".join(c.value for c in tax.conditions)
        print(f"  {name:<14} {tax.learning_strategy.value:<32} | {conds:<28} | {tasks}")
        if tax.paper:
            print(f"  {'':<14} {tax.paper}")
        print(f"  {'':<14} families: {', '.join(cls.families) or 'any (loads no backbone)'}")
        for line in describe_presets(cls.presets):
            print(f"  {'':<14} {line}")
    for title, registry in (("inversions (method=edit inversion=NAME)", INVERSIONS),
                            ("editors (method=edit editor=NAME)", EDITORS)):
        print(f"\n{title}:")
        for name in registry.names():
            cls = registry.get(name)
            strategy = getattr(cls, "learning_strategy", None)
            print(f"  {name:<14} {cls.paper}" + (f" [{strategy.value}]" if strategy is not None else ""))
            for line in describe_presets(cls.presets):
                print(f"  {'':<14} {line}")
    print("\ndatasets:")
    for name in DATASETS.names():
        print(f"  {name}")
    print("\nmetrics:")
    for name in METRICS.names():
        cls = METRICS.get(name)
        definition = getattr(cls, "definition", "") or next(iter((cls.__doc__ or "").strip().splitlines()), "")
        print(f"  {name:<17} {'↑' if cls.higher_is_better else '↓'} {definition}")
    print("\nbackbone families (guidance, steps, scale, resolution policy, dtype, pipelines per task):")
    from editlab.models.families import describe_families

    for line in describe_families():
        print(f"  {line}")
    print("\nbackbones (configs/backbone):")
    for name in BACKBONES.names():
        cfg = OmegaConf.load(CONFIG_DIR / "backbone" / f"{name}.yaml")
        family = cfg.get("family") or "sd"
        print(f"  {name:<24} {family:<21} {cfg.get('pretrained', cfg.get('_target_'))}")
    print("\nexperiments (configs/experiment):")
    for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        print(f"  {p.stem}")


def _report(argv: list[str]) -> None:
    from editlab.bench.tables import find_runs

    parser = argparse.ArgumentParser(
        prog="editlab report",
        description="Re-render tables, figures, gallery, pilot report and human-evaluation pages from stored results "
                    "(no model is loaded).")
    parser.add_argument("paths", nargs="+", help="results folders (any level: experiment, dataset or run)")
    parser.add_argument("--task-metric", default=None, help="metric of the per-task-type table")
    parser.add_argument("--failures", choices=("common", "worst"), default="common",
                        help="common: compare on the samples every method edited (default); worst: a failed edit or "
                             "metric scores the metric's worst value")
    parser.add_argument("--correction", choices=("holm", "bh", "none"), default="holm",
                        help="multiple-comparison correction of each table's paired tests (default holm)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--out", default=None, help="where to write the reports (default: first path)")
    parser.add_argument("--tables-only", action="store_true", help="only table.{md,csv,tex,html} (fast)")
    parser.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                        help="quality vs runtime, per-task bars, spread, inversion x editor heat maps (PNG + SVG)")
    parser.add_argument("--gallery", action=argparse.BooleanOptionalAction, default=True,
                        help="self-contained HTML gallery per dataset")
    parser.add_argument("--gallery-max-samples", type=int, default=None, help="first N samples only")
    parser.add_argument("--thumb", type=int, default=192, help="thumbnail size in the gallery, pixels")
    parser.add_argument("--pilot", action=argparse.BooleanOptionalAction, default=True,
                        help="pilot report for adopters (pilot.md / pilot.html)")
    parser.add_argument("--price-per-hour", type=float, default=2.0, help="device price per hour (default 2.0)")
    parser.add_argument("--currency", default="USD")
    parser.add_argument("--manual-minutes", type=float, default=None,
                        help="minutes a manual edit takes: the pilot report then shows the labour saved per edit")
    parser.add_argument("--review-minutes", type=float, default=0.0,
                        help="minutes a person spends reviewing one generated edit (subtracted from the saving)")
    parser.add_argument("--accept", default=None, metavar="SOURCE",
                        help="which edits count as accepted for the saving: oracle[:T] (ShapesWorld), "
                             "metric:<column>>=<T> (e.g. a judge column) or human>=<T> (Likert ratings)")
    parser.add_argument("--export-rating-page", choices=("pairwise", "likert"), default=None,
                        help="write a blind human rating page (human/rating_page.html) and its key")
    parser.add_argument("--rating-items", type=int, default=100, help="items on the rating page")
    parser.add_argument("--ratings", nargs="+", default=[], metavar="FILE",
                        help="rating files saved from the rating page (JSON or CSV): Elo / Bradley-Terry, alpha")
    parser.add_argument("--rating-key", default=None, help="rating_key.json (default: beside the rating files)")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        sys.exit(f"editlab report: no results.json under {', '.join(args.paths)}")
    out_dir = Path(args.out or args.paths[0])
    from editlab.bench.tables import DefinitionConflict, TableOptions

    table = TableOptions(failures=args.failures, correction=args.correction, alpha=args.alpha)
    if args.tables_only:
        from editlab.bench.tables import render_tables

        try:
            print(render_tables(runs, out_dir=out_dir, task_metric=args.task_metric, options=table)["markdown"])
        except DefinitionConflict as err:
            sys.exit(f"editlab report: {err}")
        print(f"\n{len(runs)} runs; tables written to {out_dir}/table.{{md,csv,tex,html}}")
        return
    from editlab.reports import ReportOptions, render_report

    options = ReportOptions(
        task_metric=args.task_metric, plots=args.plots, gallery=args.gallery,
        gallery_max_samples=args.gallery_max_samples, thumb=args.thumb, pilot=args.pilot,
        price_per_hour=args.price_per_hour, currency=args.currency, manual_minutes=args.manual_minutes,
        review_minutes=args.review_minutes, accept=args.accept,
        export_rating_page=args.export_rating_page, rating_items=args.rating_items,
        ratings=[Path(r) for r in args.ratings], rating_key=Path(args.rating_key) if args.rating_key else None,
        table=table)
    try:
        out = render_report(runs, out_dir, options)
    except DefinitionConflict as err:
        sys.exit(f"editlab report: {err}")
    print(out["tables"]["markdown"])
    print(f"\n{len(runs)} runs; reports written to {out_dir}:")
    for section, paths in out["files"].items():
        if paths:
            print(f"  {section}: " + ", ".join(str(p.relative_to(out_dir)) if p.is_relative_to(out_dir) else str(p)
                                             for p in paths))


def _data(argv: list[str]) -> None:
    from editlab.datasets.prepare import main as prepare

    if not argv or argv[0] != "prepare":
        sys.exit("usage: editlab data prepare <dataset> [--root DIR] [--offline] ...  (editlab data prepare --help)")
    sys.exit(prepare(argv[1:]))


def _train(argv: list[str]) -> None:
    import importlib

    if not argv or argv[0] not in TRAINERS:
        sys.exit(f"usage: editlab train {{{','.join(TRAINERS)}}} [options]  (editlab train <name> --help)")
    importlib.import_module(TRAINERS[argv[0]]).main(argv[1:])


USAGE = """usage: editlab <command> [args]

commands:
  run [overrides]      run a methods x datasets grid (Hydra app: method=, dataset=, backbone=, seed=, -m ...)
  list                 registered methods (with survey taxonomy), datasets, metrics, backbones, experiments
  report DIR [...]     re-render tables, figures, gallery, pilot report, human evaluation (no models)
  data prepare NAME    fetch (when online) or explain where to place a benchmark, then verify it
  train NAME [...]     train one of editlab's ShapesWorld models ({trainers})
"""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.format(trainers=", ".join(TRAINERS)))
        return
    command, rest = argv[0], argv[1:]
    if command == "run":
        _hydra_run(rest)
    elif command == "list":
        _list()
    elif command == "report":
        _report(rest)
    elif command == "data":
        _data(rest)
    elif command == "train":
        _train(rest)
    else:
        sys.exit(f"editlab: unknown command '{command}', available: run, list, report, data, train")


if __name__ == "__main__":
    main()
