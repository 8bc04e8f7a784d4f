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
}


def _hydra_run(argv: list[str]) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from editlab.bench.cache import atomic_write_text
    from editlab.bench.runner import run

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        outcome = run(cfg)
        atomic_write_text(Path(HydraConfig.get().runtime.output_dir) / "run_dir.txt", str(outcome.run_dir))
        print(f"\nresults: {outcome.run_dir}  (edited {outcome.edited}, reused {outcome.reused} from cache)")

    sys.argv = [sys.argv[0], *argv]
    _main()


def _list() -> None:
    from omegaconf import OmegaConf

    from editlab.registry import BACKBONES, DATASETS, METHODS, METRICS

    print("methods (learning strategy | conditions | tasks):")
    for name in METHODS.names():
        tax = METHODS.get(name).taxonomy
        tasks = "all" if len(tax.tasks) == 12 else ", ".join(t.value for t in tax.tasks)
        conds = ", ".join(c.value for c in tax.conditions)
        print(f"  {name:<14} {tax.learning_strategy.value:<32} | {conds:<28} | {tasks}")
        if tax.paper:
            print(f"  {'':<14} {tax.paper}")
    print("\ndatasets:")
    for name in DATASETS.names():
        print(f"  {name}")
    print("\nmetrics:")
    for name in METRICS.names():
        cls = METRICS.get(name)
        definition = getattr(cls, "definition", "") or next(iter((cls.__doc__ or "").strip().splitlines()), "")
        print(f"  {name:<17} {'↑' if cls.higher_is_better else '↓'} {definition}")
    print("\nbackbones (configs/backbone):")
    for name in BACKBONES.names():
        cfg = OmegaConf.load(CONFIG_DIR / "backbone" / f"{name}.yaml")
        print(f"  {name:<14} {cfg.get('pretrained', cfg.get('_target_'))}")
    print("\nexperiments (configs/experiment):")
    for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        print(f"  {p.stem}")


def _report(argv: list[str]) -> None:
    from editlab.bench.tables import find_runs, render_tables

    parser = argparse.ArgumentParser(prog="editlab report", description="Re-render tables from stored results.")
    parser.add_argument("paths", nargs="+", help="results folders (any level: experiment, dataset or run)")
    parser.add_argument("--task-metric", default=None, help="metric of the per-task-type table")
    parser.add_argument("--out", default=None, help="where to write table.md/csv/tex (default: first path)")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        sys.exit(f"editlab report: no results.json under {', '.join(args.paths)}")
    out_dir = Path(args.out or args.paths[0])
    print(render_tables(runs, out_dir=out_dir, task_metric=args.task_metric)["markdown"])
    print(f"\n{len(runs)} runs; tables written to {out_dir}/table.{{md,csv,tex}}")


def _train(argv: list[str]) -> None:
    import importlib

    if not argv or argv[0] not in TRAINERS:
        sys.exit(f"usage: editlab train {{{','.join(TRAINERS)}}} [options]  (editlab train <name> --help)")
    importlib.import_module(TRAINERS[argv[0]]).main(argv[1:])


USAGE = """usage: editlab <command> [args]

commands:
  run [overrides]      run a methods x datasets grid (Hydra app: method=, dataset=, backbone=, seed=, -m ...)
  list                 registered methods (with survey taxonomy), datasets, metrics, backbones, experiments
  report DIR [...]     re-render comparison tables from stored results
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
    elif command == "train":
        _train(rest)
    else:
        sys.exit(f"editlab: unknown command '{command}', available: run, list, report, train")


if __name__ == "__main__":
    main()
