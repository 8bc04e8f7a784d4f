"""Crash safety: start a run, kill -9 it at random moments, resume; nothing may be lost or truncated.

    python benchmarks/crash_safety.py --kills 10 [--samples 24]

Builds a folder dataset, runs `editlab run` on the toy backbone as a subprocess, SIGKILLs its process group at
a random moment (during start-up, editing or scoring) ``--kills`` times, then lets it finish. Checks that every
sample has a parseable record, every image decodes fully and equals the uninterrupted run's, and the final
table equals that of an uninterrupted run (temporary files a kill leaves mid-write are counted; the next run
removes them once they are a minute old). Prints the figures; exits non-zero on any loss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _cmd(data: Path, results: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "editlab.bench.cli", "run", "method=sdedit", "backbone=toy",
            "backbone.num_inference_steps=4", "dataset=folder", f"dataset.root={data}", f"dataset.limit={n}",
            f"results_dir={results}", "device=cpu", "experiment_name=crash", "metrics=default"]


def _run(cmd: list[str], kill_after: float | None) -> bool:
    """Run ``cmd``; SIGKILL its whole process group after ``kill_after`` seconds. True if it was killed."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        proc.wait(timeout=kill_after)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def check(run_dir: Path, n: int) -> dict[str, int]:
    """Count records, decodable images and leftover temporary files of a finished run."""
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "records").glob("*.json"))]
    images = 0
    for rec in records:
        if rec["status"] == "ok":
            with Image.open(run_dir / rec["image"]) as im:
                im.load()
            images += 1
    temps = list(run_dir.rglob("*.tmp"))
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    return {"expected": n, "records": len(records), "images": images, "jsonl_lines": len(lines),
            "temp_files": len(temps)}


def crash_test(kills: int, samples: int, seed: int = 0, workdir: Path | None = None,
               window: tuple[float, float] = (2.0, 9.0)) -> dict[str, object]:
    """``kills`` attempts, each SIGKILLing a fresh run after a uniform random delay in ``window`` seconds (a run
    that finishes first is not counted as killed), then a final uninterrupted resume and a clean reference run."""
    from conftest import write_folder_dataset

    from editlab.bench.tables import build_table

    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="editlab-crash-"))
    data = write_folder_dataset(work / "data", n_good=samples, broken=False)
    killed, start = 0, time.perf_counter()
    for _ in range(kills):
        killed += _run(_cmd(data, work / "killed", samples), kill_after=rng.uniform(*window))
    _run(_cmd(data, work / "killed", samples), kill_after=None)
    _run(_cmd(data, work / "clean", samples), kill_after=None)
    run_killed = next((work / "killed" / "crash" / "folder").glob("sdedit-*"))
    run_clean = next((work / "clean" / "crash" / "folder").glob("sdedit-*"))
    figures = check(run_killed, samples)
    t_killed, _ = build_table([run_killed])
    t_clean, _ = build_table([run_clean])
    cols = [c for c in t_clean.columns if not c.startswith(("s/edit", "peak"))]
    same_images = all((run_killed / "images" / p.name).read_bytes() == p.read_bytes()
                      for p in (run_clean / "images").iterdir())
    equal = bool(t_killed[cols].equals(t_clean[cols]))
    if not equal:
        print(t_killed[cols].to_string(), t_clean[cols].to_string(), sep="\n")
    return figures | {"kills": killed, "tables_equal": equal,
                      "images_identical": same_images, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, nargs=2, default=(2.0, 9.0), help="kill delay range, seconds")
    args = parser.parse_args()
    out = crash_test(args.kills, args.samples, args.seed, window=tuple(args.window))
    print(json.dumps(out, indent=2))
    lost = out["expected"] - out["records"]
    ok = lost == 0 and out["tables_equal"] and out["images_identical"]
    print(f"kills survived: {out['kills']}, samples lost: {lost}, tables equal: {out['tables_equal']}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
