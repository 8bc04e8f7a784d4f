"""Judge throughput against a local OpenAI-compatible server: calls per second at concurrency 1 and 8, and the
time of a rerun that the response cache answers.

By default it builds editlab's tiny random Qwen2-VL (:mod:`editlab.models.toy_vlm`), starts ``transformers serve``
on 127.0.0.1 and judges ``--samples`` random 64x64 edits with editlab's protocol (3 queries per sample, one
re-ask budget of ``--parse-retries``). ``--base-url``/``--model`` point it at a running server instead (e.g. vLLM).
The figures measure the client, the server and the model together; with the toy model they are an upper bound
on what the harness adds per call, not a judge's speed.

    python benchmarks/judge_throughput.py --samples 24
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from editlab import ROOT
from editlab.metrics.base import EditBatch
from editlab.metrics.judge import JudgeMetric


def _batch(n: int, seed: int) -> EditBatch:
    g = torch.Generator().manual_seed(seed)
    return EditBatch(edited=torch.rand(n, 3, 64, 64, generator=g), source=torch.rand(n, 3, 64, 64, generator=g),
                     source_prompts=["a red circle"] * n, target_prompts=["a blue circle"] * n,
                     instructions=[f"make circle {i} blue" for i in range(n)], task_types=["color_change"] * n)


def _metric(base_url: str, model: str, cache: Path, concurrency: int, parse_retries: int) -> JudgeMetric:
    node = OmegaConf.load(ROOT / "configs" / "metrics" / "judge" / "editlab.yaml")["editlab_judge"]
    protocol = OmegaConf.to_container(node["protocol"], resolve=True)
    return JudgeMetric(protocol=protocol, client={"base_url": base_url, "model": model, "concurrency": concurrency},
                       decoding={"temperature": 1.0, "seed": 0, "max_tokens": 1}, parse_retries=parse_retries,
                       cache_dir=str(cache))


def measure(base_url: str, model: str, samples: int, parse_retries: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="judge-bench-"))
    try:
        for concurrency in (1, 8):
            metric = _metric(base_url, model, work / f"cache-c{concurrency}", concurrency, parse_retries)
            batch = _batch(samples, seed=concurrency)  # other images: nothing is cached across the two settings
            start = time.perf_counter()
            metric.score_samples(batch)
            seconds = time.perf_counter() - start
            calls = metric.stats["calls"]
            print(f"concurrency {concurrency}: {calls} calls in {seconds:.2f} s = {calls / seconds:.1f} calls/s "
                  f"({metric.stats['parse_failures']} unparseable replies re-asked or recorded)")
            rerun = _metric(base_url, model, work / f"cache-c{concurrency}", concurrency, parse_retries)
            start = time.perf_counter()
            rerun.score_samples(batch)
            seconds = time.perf_counter() - start
            print(f"  rerun from the cache: {rerun.stats['cache_hits']} hits, {rerun.stats['calls']} calls, "
                  f"{seconds * 1000:.0f} ms ({seconds / samples * 1000:.1f} ms per sample)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--parse-retries", type=int, default=2)
    parser.add_argument("--base-url", default=None, help="a running server (default: start transformers serve)")
    parser.add_argument("--model", default=None, help="the model name that server serves")
    args = parser.parse_args()
    if args.base_url:
        measure(args.base_url, args.model or "default", args.samples, args.parse_retries)
        return
    from editlab.metrics.judge.local_server import LocalServer
    from editlab.models.toy_vlm import build_toy_vlm

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_toy_vlm(Path(tmp) / "toy-vlm")
        start = time.perf_counter()
        with LocalServer(folder) as server:
            print(f"transformers serve (toy Qwen2-VL, random weights) up in {time.perf_counter() - start:.1f} s "
                  f"at {server.base_url}")
            measure(server.base_url, str(folder), args.samples, args.parse_retries)


if __name__ == "__main__":
    main()
