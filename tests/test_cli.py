"""The `editlab` command as a user types it: list, run (Hydra multirun) and report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import write_folder_dataset

from editlab.bench.cli import main
from editlab.bench.tables import find_runs


def test_list_shows_taxonomy(capsys) -> None:
    main(["list"])
    out = capsys.readouterr().out
    assert "sdedit" in out and "ddim_swap" in out
    assert "training- and fine-tuning-free" in out and "prompt pair" in out
    assert "bg_psnr" in out and "shapesworld" in out and "sd15" in out


def test_unknown_command_lists_commands() -> None:
    try:
        main(["frobnicate"])
    except SystemExit as err:
        assert "available: run, list, report, data, train" in str(err)
    else:
        raise AssertionError("expected SystemExit")


def test_run_multirun_then_report(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", n_good=2, broken=False)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "editlab.bench.cli", "run", "-m", "method=sdedit,ddim_swap", "backbone=toy",
           "backbone.num_inference_steps=2", "dataset=folder", f"dataset.root={data}", f"results_dir={results}",
           "device=cpu", "experiment_name=clitest"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset_dir = results / "clitest" / "folder"
    runs = find_runs([dataset_dir])
    assert sorted(r.name.split("-")[0] for r in runs) == ["ddim_swap", "sdedit"]
    combined = (dataset_dir / "table.md").read_text()
    assert "sdedit" in combined and "ddim_swap" in combined and "bg_psnr ↑" in combined
    assert "=== " in proc.stdout  # the multirun summary table was printed
    # report re-renders the same table from stored results alone
    (dataset_dir / "table.md").unlink()
    main(["report", str(dataset_dir)])
    assert (dataset_dir / "table.md").read_text() == combined


def test_default_grid_only_without_grid_keys() -> None:
    from editlab.bench.cli import default_grid

    assert default_grid([]) == ["experiment=default"]
    assert default_grid(["dataset.limit=5"]) == ["dataset.limit=5", "experiment=default"]
    assert default_grid(["method=sdedit"]) == ["method=sdedit"]
    assert default_grid(["-m", "inversion=ddim,nti", "editor=p2p"]) == ["-m", "inversion=ddim,nti", "editor=p2p"]
    assert default_grid(["experiment=smoke"]) == ["experiment=smoke"]
