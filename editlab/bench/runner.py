"""The runner: one (method, dataset, backbone, seed) grid point, resumable and crash-safe.

Layout of one run (``results/<experiment>/<dataset>/<method>-<hash>/``)::

    config.yaml     resolved config of this grid point
    env.json        library versions, git revision, device
    images/         one PNG per edited sample (written atomically)
    records/        one JSON record per sample (written atomically; the cache)
    samples.jsonl   all records, one per line, in dataset order
    results.json    aggregates, metric definitions, counts

``<hash>`` is a hash of the resolved method and backbone configs and the seed, so two settings of one
method never share outputs. A method that needs no backbone (``EditMethod.needs_backbone`` False: imported
outputs) gets none loaded and its hash leaves the backbone out; its images keep the dataset's size. A method whose
edits were made elsewhere (``EditMethod.measured`` False) has runtime and memory recorded as unknown
(``"runtime": "unknown (imported)"``, null values). A sample whose record and image exist is not edited again; a
record whose metric values were computed with other metric settings only has its metrics recomputed.

Chained samples (multi-turn editing, :meth:`editlab.datasets.base.EditDataset.chain_from`): such a sample is
edited from the cached edited image of the sample it names (edited earlier in dataset order, in the same
run folder), not from its own source image; when that sample has no edited output, this one gets a specific
error and the run goes on. Its record keeps ``chain_from`` and ``chain_source`` (a hash of the image it was
edited from), so a resumed run edits it again when the dataset now chains it differently, or when the
previous sample is edited again in this run or its stored image changed; otherwise it is reused. Samples
the dataset does not score (:meth:`~editlab.datasets.base.EditDataset.scored`) are edited and recorded
with ``"scored": false`` but get no metric values and stay out of the counts and aggregates (the flag is
refreshed from the dataset on every run, so one folder of chained edits can be scored either way).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm.auto import tqdm

from editlab.bench.env import PeakMemory, environment, versions
from editlab.datasets.base import EditDataset
from editlab.files import (
    atomic_save_image,
    atomic_write_json,
    atomic_write_text,
    derive_seed,
    read_json,
    safe_name,
    stable_hash,
    weight_hashes,
)
from editlab.methods.base import EditMethod
from editlab.metrics.base import EditBatch, EditMetric, MetricUnavailable, mask_to_unit, pil_to_unit, to_rgb
from editlab.metrics.distribution import DistributionMetric
from editlab.types import EditOutput, NotApplicable, Sample, SampleError

log = logging.getLogger("editlab")

STATUS_OK, STATUS_ERROR, STATUS_NA = "ok", "error", "not_applicable"


@dataclass
class RunOutcome:
    run_dir: Path
    results: dict[str, Any]
    edited: int
    reused: int


# --------------------------------------------------------------------------------------------------------
# Building objects from the config
# --------------------------------------------------------------------------------------------------------
def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def build_metrics(metrics_cfg: Any) -> tuple[list[Any], dict[str, str]]:
    """Instantiate the metric configs; metrics whose weights are missing are skipped with their reason."""
    from hydra.utils import instantiate

    metrics: list[Any] = []
    skipped: dict[str, str] = {}
    for key, mcfg in (metrics_cfg or {}).items():
        if mcfg is None or str(key).startswith("_"):  # `_input_`: how edits are presented to metrics, not a metric
            continue
        try:
            metrics.append(instantiate(mcfg))
        except Exception as err:
            cause = err
            while cause.__cause__ is not None and not isinstance(cause, MetricUnavailable):
                cause = cause.__cause__
            if not isinstance(cause, MetricUnavailable):
                raise
            skipped[key] = str(cause)
            log.warning("metric %s skipped: %s", key, cause)
    return metrics, skipped


def describe_metric(metric: Any, hash_cache: Path | None = None) -> dict[str, dict[str, Any]]:
    """The recorded definition of every column a metric writes (a multi-column metric, e.g. a judge protocol,
    defines several), each with the sha256 of every weight file the metric computes with."""
    files = metric.weight_files() if hasattr(metric, "weight_files") else []
    hashes = {"weights": weight_hashes(files, hash_cache)}
    columns = metric.column_definitions() if hasattr(metric, "column_definitions") else {metric.name: metric.describe()}
    return {name: d | hashes for name, d in columns.items()}


def build(node: Any) -> Any:
    """Instantiate a method or dataset config (``_target_``). Its ``name`` key is a label and its optional
    ``backbone`` key the method's own backbone config (see :func:`backbone_config`), not arguments."""
    from hydra.utils import instantiate

    return instantiate({k: v for k, v in _plain(node).items() if k not in ("name", "backbone")})


def backbone_config(cfg: DictConfig) -> Any:
    """The backbone a grid point runs on: the method's own ``backbone`` node when it has one (an instruction
    or inpainting model needs its specialised UNet), else the global ``backbone``."""
    own = cfg.method.get("backbone")
    return own if own is not None else cfg.backbone


def table_options(cfg: DictConfig) -> Any:
    """The tables' comparison settings from the config's ``report`` node (defaults when absent)."""
    from editlab.bench.tables import TableOptions

    return TableOptions(**(_plain(cfg.get("report")) or {}))


def run_dir_for(cfg: DictConfig) -> Path:
    """``<results_dir>/<experiment>/<dataset>/<method>-<hash>`` for this grid point."""
    key = run_key(cfg)
    method_name = cfg.method.get("name", "method")
    return Path(cfg.results_dir) / cfg.experiment_name / cfg.dataset.name / f"{method_name}-{key}"


def method_needs_backbone(cfg: DictConfig) -> bool:
    """Whether the method's class loads a backbone (:attr:`EditMethod.needs_backbone`), read without building it."""
    from hydra.utils import get_class

    try:
        return bool(getattr(get_class(str(cfg.method._target_)), "needs_backbone", True))
    except Exception:
        return True


def run_key(cfg: DictConfig) -> str:
    """Hash of everything that changes an edited image: method, backbone (for methods that use one), seed, dtype
    and resolution."""
    backbone = ({k: v for k, v in _plain(backbone_config(cfg)).items() if k not in ("device",)}
                if method_needs_backbone(cfg) else None)
    return stable_hash({"method": _plain(cfg.method), "backbone": backbone, "seed": cfg.seed, "dtype": cfg.dtype})


# --------------------------------------------------------------------------------------------------------
# Per-sample editing
# --------------------------------------------------------------------------------------------------------
def prepare_sample(sample: Sample, resolution: int | None) -> Sample:
    """Convert images to RGB and resize to the working resolution (mask with nearest neighbour)."""
    try:
        sample.source_image.load()
    except Exception as err:
        raise SampleError(f"source image is unreadable: {type(err).__name__}: {err}") from err
    sample.source_image = to_rgb(sample.source_image)
    w, h = sample.source_image.size
    if min(w, h) < 8:
        raise SampleError(f"source image is too small ({w}x{h}); at least 8x8 is needed")
    if sample.mask is not None and sample.mask.size != sample.source_image.size:
        raise SampleError(f"mask size {sample.mask.size} differs from image size {sample.source_image.size}")
    if resolution is not None and sample.source_image.size != (resolution, resolution):
        size = (resolution, resolution)
        sample.source_image = sample.source_image.resize(size, Image.BICUBIC)
        if sample.mask is not None:
            sample.mask = sample.mask.convert("L").resize(size, Image.NEAREST)
        if sample.target_image is not None:
            sample.target_image = to_rgb(sample.target_image).resize(size, Image.BICUBIC)
    if sample.reference_image is not None:
        sample.reference_image = to_rgb(sample.reference_image)
    if sample.reference_images:
        sample.reference_images = [to_rgb(image) for image in sample.reference_images]
    for key in ("source_prompt", "target_prompt", "instruction"):
        text = getattr(sample, key)
        if text is None:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            setattr(sample, key, text.encode("utf-8", "replace").decode("utf-8"))
            sample.meta.setdefault("input_warnings", []).append(
                f"{key} had characters that are not valid UTF-8; replaced with '?'")
    return sample


def output_to_image(output: EditOutput, size: tuple[int, int]) -> Image.Image:
    """Validate a method's output and return it as an RGB image of ``size``."""
    image = output.image
    if isinstance(image, Image.Image):
        image = to_rgb(image)
    else:
        arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
        if arr.ndim == 4:
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
            arr = arr.transpose(1, 2, 0)
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise SampleError(f"method returned non-finite values (NaN or inf) in {bad} of {arr.size} pixels")
        image = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))
    if image.size != size:
        image = image.resize(size, Image.BICUBIC)
    return image


EditResult = tuple[dict[str, Any], Image.Image | None, dict[str, Image.Image]]


def edit_one(method: EditMethod, dataset: EditDataset, sample_id: str, seed: int, resolution: int | None,
             device: torch.device, run_dir: Path | None = None) -> EditResult:
    """Edit one sample; never raises for a sample's problem: the record carries status and message.

    A chained sample (``dataset.chain_from``) is edited from the previous sample's edited image in ``run_dir``,
    resized to the working resolution like any source image."""
    rec: dict[str, Any] = {"id": sample_id, "seed": derive_seed(seed, sample_id)}
    previous = dataset.chain_from(sample_id)
    chained_png = None
    if previous is not None:
        if run_dir is None:
            raise ValueError(f"sample '{sample_id}' is chained to '{previous}': edit_one needs the run folder")
        chained_png, why = previous_output(run_dir, previous)
        rec |= {"chain_from": previous, "chain_source": output_digest(chained_png)}
        if chained_png is None:
            error = f"previous turn '{previous}' has no edited output: {why}"
            return rec | {"status": STATUS_ERROR, "error": error}, None, {}
    try:
        sample = dataset.load(sample_id)
    except SampleError as err:
        return rec | {"status": STATUS_ERROR, "error": f"could not load sample: {err}"}, None, {}
    except Exception as err:  # a loader bug must not end the run either
        return rec | {"status": STATUS_ERROR, "error": f"could not load sample: {type(err).__name__}: {err}"}, None, {}
    rec |= {
        "task_type": sample.task_type.value if sample.task_type else None,
        "source_prompt": sample.source_prompt,
        "target_prompt": sample.target_prompt,
        "instruction": sample.instruction,
    }
    reason = method.not_applicable_reason(sample)
    if reason:
        return rec | {"status": STATUS_NA, "error": reason}, None, {}
    try:
        sample = prepare_sample(sample, resolution)
        if chained_png is not None:
            sample.source_image = chained_image(chained_png, str(previous), sample.source_image.size)
        method.check_inputs(sample)
        generator = torch.Generator("cpu").manual_seed(rec["seed"])
        gpu_time = None
        with PeakMemory(device) as mem:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                start_evt, end_evt = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start_evt.record()
            start = time.perf_counter()
            output = method.edit(sample, generator)
            if device.type == "cuda":
                end_evt.record()
                torch.cuda.synchronize(device)
                gpu_time = start_evt.elapsed_time(end_evt) / 1000.0
            wall = time.perf_counter() - start
        image = output_to_image(output, sample.source_image.size)
    except NotApplicable as err:
        return rec | {"status": STATUS_NA, "error": str(err)}, None, {}
    except SampleError as err:
        return rec | {"status": STATUS_ERROR, "error": str(err)}, None, {}
    except torch.OutOfMemoryError as err:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return rec | {"status": STATUS_ERROR, "error": f"out of memory: {err}"}, None, {}
    except Exception as err:
        log.debug("method failed on %s:\n%s", sample_id, traceback.format_exc())
        return rec | {"status": STATUS_ERROR, "error": f"method raised {type(err).__name__}: {err}"}, None, {}
    info = dict(output.info)
    warnings = list(sample.meta.get("input_warnings", [])) + list(info.pop("warnings", []))
    if warnings:
        rec["warnings"] = warnings
    rec |= {"status": STATUS_OK, "error": None, "wall_time_s": wall, "gpu_time_s": gpu_time,
            "peak_mem_mb": mem.peak_mb, "peak_mem_kind": mem.kind, "info": info}
    if not method.measured:  # made elsewhere: the time spent here is reading a file, not editing
        rec |= {"wall_time_s": None, "gpu_time_s": None, "peak_mem_mb": None, "peak_mem_kind": None,
                "runtime": "unknown (imported)"}
    return rec, image, dict(output.extras)


# --------------------------------------------------------------------------------------------------------
# Chained samples: the previous sample's cached output is the source
# --------------------------------------------------------------------------------------------------------
def previous_output(run_dir: Path, previous_id: str) -> tuple[bytes | None, str]:
    """The stored PNG of ``previous_id``'s edit in ``run_dir``, or None and why there is none."""
    rec = read_json(run_dir / "records" / f"{safe_name(previous_id)}.json")
    if rec is None or rec.get("id") != previous_id:
        return None, "it has not been edited in this run folder (it must come earlier in the dataset order)"
    if rec.get("status") != STATUS_OK:
        status = "" if rec.get("status") == STATUS_ERROR else f"{rec.get('status')}: "
        return None, f"{status}{rec.get('error')}"
    try:
        return (run_dir / rec["image"]).read_bytes(), ""
    except (KeyError, OSError):
        return None, f"its image {rec.get('image')} is missing"


def output_digest(png: bytes | None) -> str | None:
    return None if png is None else hashlib.sha256(png).hexdigest()[:16]


def chained_image(png: bytes, previous_id: str, size: tuple[int, int]) -> Image.Image:
    """Decode a previous sample's stored edit as an RGB source image of ``size``."""
    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except Exception as err:
        raise SampleError(f"previous turn '{previous_id}' output is unreadable: {type(err).__name__}: {err}") from err
    image = to_rgb(image)
    return image if image.size == size else image.resize(size, Image.BICUBIC)


def chain_changed(run_dir: Path, rec: dict[str, Any], previous: str | None, redone: set[str]) -> bool:
    """Whether a cached record no longer fits its chain: the dataset chains it differently now, or the previous
    sample is edited again in this run, or its stored output differs from the one this edit started from."""
    if rec.get("chain_from") != previous:
        return True
    if previous is None:
        return False
    return previous in redone or output_digest(previous_output(run_dir, previous)[0]) != rec.get("chain_source")


def mark_scored(rec: dict[str, Any], scored: bool) -> bool:
    """Set a record's ``scored`` flag (stored only when False); whether that changed the record."""
    if rec.get("scored", True) == scored:
        return False
    if scored:
        del rec["scored"]
    else:
        rec["scored"] = False
    return True


def is_scored(rec: dict[str, Any]) -> bool:
    return rec.get("scored", True) is not False


# --------------------------------------------------------------------------------------------------------
# Metrics over stored edits
# --------------------------------------------------------------------------------------------------------
Loaded = tuple[dict[str, Any], Sample, Image.Image]


def _batch_for(items: list[Loaded]) -> EditBatch:
    """Stack (record, sample, edited image) triples into one batch at the edited image's size."""
    edited, source, masks, targets = [], [], [], []
    for _, sample, image in items:
        size = image.size
        src = to_rgb(sample.source_image)
        edited.append(pil_to_unit(image))
        source.append(pil_to_unit(src.resize(size, Image.BICUBIC) if src.size != size else src))
        mask = sample.mask
        masks.append(None if mask is None else mask_to_unit(mask.convert("L").resize(size, Image.NEAREST)))
        tgt = sample.target_image
        targets.append(None if tgt is None else pil_to_unit(to_rgb(tgt).resize(size, Image.BICUBIC)))
    return EditBatch(
        edited=torch.stack(edited),
        source=torch.stack(source),
        source_prompts=[r.get("source_prompt") for r, _, _ in items],
        target_prompts=[r.get("target_prompt") for r, _, _ in items],
        mask=torch.stack(masks) if all(m is not None for m in masks) else None,
        target=torch.stack(targets) if all(t is not None for t in targets) else None,
        meta=[sample.meta for _, sample, _ in items],
        instructions=[r.get("instruction") for r, _, _ in items],
        task_types=[r.get("task_type") for r, _, _ in items],
        source_images=[to_rgb(sample.source_image) for _, sample, _ in items],
    )


def scoring_input(metrics_cfg: Any) -> dict[str, Any]:
    """How stored edits are presented to the metrics (``metrics._input_``): ``jpeg_quality`` re-encodes each
    edit as JPEG at that quality first (PIE-Bench's run_editing scripts saved their edits with PIL's default
    JPEG quality, 75, and its numbers were computed on those files)."""
    raw = _plain((metrics_cfg or {}).get("_input_")) or {}
    unknown = set(raw) - {"jpeg_quality"}
    if unknown:
        raise ValueError(f"unknown metrics._input_ keys {sorted(unknown)}, available: jpeg_quality")
    quality = raw.get("jpeg_quality")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"metrics._input_.jpeg_quality must be in [1, 100], got {quality}")
    return {"jpeg_quality": None if quality is None else int(quality)}


def as_scored(image: Image.Image, jpeg_quality: int | None) -> Image.Image:
    """The edit as the metrics see it: unchanged, or encoded as JPEG at ``jpeg_quality`` and decoded again."""
    if jpeg_quality is None:
        return image
    buf = io.BytesIO()
    to_rgb(image).save(buf, format="JPEG", quality=jpeg_quality)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


def metric_batches(dataset: EditDataset, run_dir: Path, records: list[dict[str, Any]], batch_size: int,
                   jpeg_quality: int | None = None) -> Iterator[tuple[list[dict[str, Any]], EditBatch]]:
    """Batches of at most ``batch_size`` stored edits, each sample loaded once. Within a chunk, samples are
    grouped so that a batch shares image size and has all or none with a mask and a target. ``jpeg_quality``:
    see :func:`scoring_input`."""
    for start in range(0, len(records), batch_size):
        groups: dict[tuple[Any, ...], list[Loaded]] = {}
        for rec in records[start:start + batch_size]:
            image = Image.open(run_dir / rec["image"])
            image.load()
            image = as_scored(image, jpeg_quality)
            sample = dataset.load(rec["id"])
            if rec.get("chain_from"):  # the image this sample was edited from, not its dataset source
                png = previous_output(run_dir, rec["chain_from"])[0]
                if png is not None:
                    sample.source_image = chained_image(png, rec["chain_from"], image.size)
                else:
                    log.warning("%s: the output of %s is gone; source metrics use the dataset source image",
                                rec["id"], rec["chain_from"])
            key = (image.size, sample.mask is not None, sample.target_image is not None)
            groups.setdefault(key, []).append((rec, sample, image))
        for items in groups.values():
            yield [rec for rec, _, _ in items], _batch_for(items)


def score_records(metrics: list[EditMetric], dataset: EditDataset, run_dir: Path, records: list[dict[str, Any]],
                  batch_size: int, jpeg_quality: int | None = None) -> None:
    """Compute every metric for ``records`` (in place), in batches from :func:`metric_batches`."""
    for chunk, batch in metric_batches(dataset, run_dir, records, batch_size, jpeg_quality):
        for metric in metrics:
            if getattr(metric, "multi_column", False):
                _store_multi_column(metric, chunk, batch)
                continue
            try:
                metric.update(batch)
                values = metric.values[-1].tolist()
            except Exception as err:
                values = [float("nan")] * len(chunk)
                for rec in chunk:
                    rec.setdefault("metric_errors", {})[metric.name] = f"{type(err).__name__}: {err}"
            for rec, v in zip(chunk, values):
                rec.setdefault("metrics", {})[metric.name] = None if math.isnan(v) else float(v)


def _store_multi_column(metric: EditMetric, chunk: list[dict[str, Any]], batch: EditBatch) -> None:
    """A multi-column metric's values, failures and payload (e.g. a judge's raw replies) into the records:
    ``metrics[col]`` (None on failure), ``metric_errors[col]`` and ``judgements[key]`` (keys as the metric says: a judge
    uses ``<protocol>[<label>]``)."""
    try:
        results = metric.score_samples(batch)
        if len(results) != len(chunk):
            raise RuntimeError(f"{metric.name} returned {len(results)} results for {len(chunk)} samples")
    except Exception as err:
        columns = list(metric.column_definitions())
        for rec in chunk:
            for col in columns:
                rec.setdefault("metrics", {})[col] = None
                rec.setdefault("metric_errors", {})[col] = f"{type(err).__name__}: {err}"
        return
    for rec, res in zip(chunk, results):
        rec.setdefault("metrics", {}).update(res.values)
        if res.errors:
            rec.setdefault("metric_errors", {}).update(res.errors)
        if res.payload:
            rec.setdefault("judgements", {}).update(res.payload)
        if res.retry:
            rec["metrics_retry"] = True


# --------------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------------
def aggregate(records: list[dict[str, Any]], higher: dict[str, bool]) -> dict[str, Any]:
    """Counts, and per metric (plus runtime and peak memory): mean, std, n, NaN count, bootstrap 95% CI (whole
    source images resampled) and worst decile (see :func:`editlab.bench.stats.summarize`).

    Records with ``"scored": false`` are left out of the counts (``counts["unscored"]`` says how many, when
    any) and the metrics; runtime and peak memory cover every successful edit."""
    from editlab.bench.stats import summarize

    scored = [r for r in records if is_scored(r)]
    counts = {s: sum(r["status"] == s for r in scored) for s in (STATUS_OK, STATUS_ERROR, STATUS_NA)}
    if len(scored) < len(records):
        counts["unscored"] = len(records) - len(scored)
    edits = [r for r in records if r["status"] == STATUS_OK]
    ok = [r for r in edits if is_scored(r)]
    names = sorted({k for r in ok for k in r.get("metrics", {})})
    columns: dict[str, dict[str, Any]] = {}
    for name in names + ["wall_time_s", "gpu_time_s", "peak_mem_mb"]:
        raw = [r.get("metrics", {}).get(name) for r in ok] if name in names else [r.get(name) for r in edits]
        if name == "gpu_time_s" and all(v is None for v in raw):
            continue
        vals = np.array([np.nan if v is None else v for v in raw], dtype=float)
        sources = [r.get("source_key") or r["id"] for r in (ok if name in names else edits)]
        columns[name] = summarize(vals, higher.get(name, False), clusters=sources)  # edits of one source: one cluster
    return {"counts": counts | {"total": len(scored)}, "metrics": columns}


def score_distribution(metrics: list[DistributionMetric], dataset: EditDataset, run_dir: Path,
                       records: list[dict[str, Any]], batch_size: int,
                       jpeg_quality: int | None = None) -> dict[str, dict[str, Any]]:
    """FID / KID over every successful edit of the run."""
    out: dict[str, dict[str, Any]] = {}
    if not metrics or not records:
        return out
    for m in metrics:
        m.reset()
    for _, batch in metric_batches(dataset, run_dir, records, batch_size, jpeg_quality):
        for m in metrics:
            m.update(batch)
    for m in metrics:
        try:
            out[m.name] = m.compute()
        except Exception as err:
            out[m.name] = {"value": None, "error": f"{type(err).__name__}: {err}"}
    return out


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------
def run(cfg: DictConfig, show_table: bool = True) -> RunOutcome:
    """Run one grid point described by a composed editlab config."""
    from editlab.models.backbone import backbone_from_config, resolve_device
    from editlab.models.families import config_family

    # 1. Build the dataset and the method (cheap; the backbone is loaded only if something must be edited)
    dataset: EditDataset = build(cfg.dataset)
    method: EditMethod = build(cfg.method)
    run_dir = run_dir_for(cfg)
    (run_dir / "records").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    device = resolve_device(cfg.device)
    atomic_write_json(run_dir / "env.json", environment(device))
    remove_orphaned_temp_files(run_dir)
    all_ids = dataset.ids()
    atomic_write_json(run_dir / "ids.json", all_ids)
    shard, num_shards = resolve_shard(cfg.runner)
    ids = shard_ids(dataset, all_ids, shard, num_shards)
    where = f" (shard {shard} of {num_shards}: {len(ids)} of {len(all_ids)})" if num_shards > 1 else ""
    log.info("%s on %s: %d samples%s -> %s", cfg.method.name, cfg.dataset.name, len(all_ids), where, run_dir)

    # 2. Edit phase: only samples without a finished record (or whose chained source changed) are edited
    records: dict[str, dict[str, Any]] = {}
    todo: list[str] = []
    redone: set[str] = set()
    for sid in ids:
        rec = load_record(run_dir, sid)
        if rec is None or chain_changed(run_dir, rec, dataset.chain_from(sid), redone):
            todo.append(sid)
            redone.add(sid)
            continue
        changed = mark_scored(rec, dataset.scored(sid))
        if rec.get("source_key") != dataset.source_key(sid):  # clusters of the paired tests (one source, many edits)
            rec["source_key"] = dataset.source_key(sid)
            changed = True
        if changed:
            atomic_write_json(run_dir / "records" / f"{safe_name(sid)}.json", rec)
        records[sid] = rec
    edit_start = time.perf_counter()
    setup_error = None
    if todo:
        torch.manual_seed(cfg.seed)
        backbone = None
        try:
            if method.needs_backbone:
                # a family the method cannot run on is refused before any weight loads
                method.check_family(config_family(_plain(backbone_config(cfg))))  # `auto`: from model_index.json
                backbone = backbone_from_config(backbone_config(cfg), device=cfg.device, dtype=cfg.dtype)
            method.setup(backbone, cache_dir=Path(cfg.results_dir) / "_cache")
        except Exception as err:  # e.g. public weights unavailable offline: this grid point is skipped, not the grid
            setup_error = f"{type(err).__name__}: {err}"
            log.error("%s could not be set up, its samples are not edited: %s", cfg.method.name, setup_error)
            todo = []
        else:
            if backbone is None:
                atomic_write_json(run_dir / "backbone.json", {"name": None, "note": "no backbone"})
            else:
                hashes = weight_hashes(backbone.weight_files(), Path(cfg.results_dir) / "_cache" / "file_hashes.json")
                atomic_write_json(run_dir / "backbone.json", backbone.describe() | {"weights": hashes})
            atomic_write_json(run_dir / "method.json", method.describe())
    if todo:
        # without a backbone, images keep the dataset's size (the method may set its own working resolution)
        resolution = backbone.resolution if backbone is not None else None
        edit_device = backbone.device if backbone is not None else torch.device("cpu")
        bar = tqdm(todo, desc=f"{cfg.method.name}", unit="edit", dynamic_ncols=True)
        for sid in bar:
            rec, image, extras = edit_one(method, dataset, sid, cfg.seed, resolution, edit_device, run_dir)
            rec["method"] = cfg.method.name
            rec["source_key"] = dataset.source_key(sid)
            mark_scored(rec, dataset.scored(sid))
            if image is not None:
                rec["image"] = f"images/{safe_name(sid)}.png"
                atomic_save_image(run_dir / rec["image"], image)
                for name, extra in extras.items():
                    path = f"extras/{safe_name(sid)}.{safe_name(name)}.png"
                    atomic_save_image(run_dir / path, to_rgb(extra))
                    rec.setdefault("extras", {})[name] = path
            atomic_write_json(run_dir / "records" / f"{safe_name(sid)}.json", rec)
            records[sid] = rec
            bar.set_postfix(status=rec["status"])
    edit_seconds = time.perf_counter() - edit_start

    # 3. Metric phase: score this worker's edits whose stored values were made with other metric settings
    metrics_start = time.perf_counter()
    all_metrics, skipped = build_metrics(cfg.metrics)
    scoring = scoring_input(cfg.metrics)
    metrics = [m for m in all_metrics if not isinstance(m, DistributionMetric)]
    dist_metrics = [m for m in all_metrics if isinstance(m, DistributionMetric)]
    hash_cache = Path(cfg.results_dir) / "_cache" / "file_hashes.json"
    described = [describe_metric(m, hash_cache) for m in metrics]
    metrics_key = stable_hash([described, scoring])
    stale = [r for r in records.values()
             if r["status"] == STATUS_OK and is_scored(r) and (r.get("metrics_key") != metrics_key
                                                               or r.get("metrics_retry"))]
    if stale:
        for rec in stale:
            rec["metrics"], rec["metric_errors"] = {}, {}
            rec.pop("judgements", None)
            rec.pop("metrics_retry", None)
        for m in metrics:
            m.reset()
        score_records(metrics, dataset, run_dir, stale, cfg.runner.metrics_batch_size, scoring["jpeg_quality"])
        for rec in stale:
            rec["metrics_key"] = metrics_key
            if not rec["metric_errors"]:
                del rec["metric_errors"]
            atomic_write_json(run_dir / "records" / f"{safe_name(rec['id'])}.json", rec)
    metrics_seconds = time.perf_counter() - metrics_start

    # 4. Assemble samples.jsonl / results.json from every worker's records (under a lock: shards share the folder)
    base = {
        "experiment": cfg.experiment_name,
        "dataset": cfg.dataset.name,
        "method": cfg.method.name,
        "run_key": run_key(cfg),
        "seed": cfg.seed,
        "taxonomy": method.taxonomy.as_dict(),
        "method_settings": _plain(cfg.method),
        "metric_modes": sorted({m.mode for m in all_metrics}),
        # after scoring: a judge's definitions also record what it served and how often it failed to parse
        "metric_definitions": {k: v for m in all_metrics for k, v in describe_metric(m, hash_cache).items()},
        "metrics_input": scoring,
        "metrics_skipped": skipped,
        "versions": versions(),
        "num_shards": num_shards,
        "setup_error": setup_error,
        "timing": {"edit_s_this_run": edit_seconds, "metrics_s_this_run": metrics_seconds,
                   "samples_scored_this_run": len(stale)},
    }
    with RunLock(run_dir):
        results = assemble(run_dir, base)
        if results["complete"] and dist_metrics:
            ok = [r for r in _present_records(run_dir, all_ids) if r["status"] == STATUS_OK and is_scored(r)]
            results["dataset_metrics"] = score_distribution(dist_metrics, dataset, run_dir, ok,
                                                            cfg.runner.metrics_batch_size, scoring["jpeg_quality"])
            atomic_write_json(run_dir / "results.json", results)
    from editlab.bench.tables import render_tables

    tables = render_tables([run_dir], out_dir=run_dir, options=table_options(cfg))
    if show_table:
        print(tables["terminal"])
        print(f"(full table: {run_dir / 'table.md'}; also .csv .tex .html)")
    return RunOutcome(run_dir=run_dir, results=results, edited=len(todo), reused=len(records) - len(todo))


# --------------------------------------------------------------------------------------------------------
# Sharding, assembly and locking
# --------------------------------------------------------------------------------------------------------
def resolve_shard(runner_cfg: Any) -> tuple[int, int]:
    """``(shard, num_shards)`` from ``runner.shard`` / ``runner.num_shards``; ``shard=auto`` reads RANK and
    WORLD_SIZE as set by ``torchrun`` / ``accelerate launch`` (one process per GPU)."""
    shard, num = runner_cfg.get("shard", 0), runner_cfg.get("num_shards", 1)
    if shard == "auto":
        shard, num = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    shard, num = int(shard), int(num)
    if num < 1 or not 0 <= shard < num:
        raise ValueError(f"runner.shard must be in [0, runner.num_shards), got shard={shard}, num_shards={num}")
    return shard, num


def shard_ids(dataset: EditDataset, ids: list[str], shard: int, num_shards: int) -> list[str]:
    """This shard's ids: samples are split by a hash of their *source image* key, so every edit of one source
    (and its cached inversion) lands on the same worker, whatever the order or number of samples."""
    if num_shards == 1:
        return ids
    return [i for i in ids if int(stable_hash(dataset.source_key(i), 8), 16) % num_shards == shard]


def remove_orphaned_temp_files(run_dir: Path, older_than_s: float = 60.0) -> int:
    """Delete temporary files a killed worker left mid-write (atomic writes never expose them); files younger
    than ``older_than_s`` may belong to a live worker and are kept."""
    now, removed = time.time(), 0
    for tmp in run_dir.rglob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def load_record(run_dir: Path, sample_id: str) -> dict[str, Any] | None:
    """A finished record for ``sample_id`` (and its image, for successful edits), else None."""
    rec = read_json(run_dir / "records" / f"{safe_name(sample_id)}.json")
    if rec is None or rec.get("id") != sample_id:
        return None
    if rec.get("status") == STATUS_OK and not (run_dir / rec.get("image", "")).is_file():
        return None
    return rec


def _present_records(run_dir: Path, ids: list[str]) -> list[dict[str, Any]]:
    return [r for r in (load_record(run_dir, i) for i in ids) if r is not None]


def assemble(run_dir: Path, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rebuild samples.jsonl and results.json from ``ids.json`` and every record present (all shards).

    ``base`` carries the run's metadata; without it, the metadata of the existing results.json is kept (this
    is how ``editlab report`` merges shards without models).
    """
    ids = read_json(run_dir / "ids.json") or []
    previous = read_json(run_dir / "results.json") or {}
    results = dict(base) if base is not None else {k: v for k, v in previous.items()}
    present = _present_records(run_dir, ids)
    higher = {n: d.get("higher_is_better", True) for n, d in results.get("metric_definitions", {}).items()}
    atomic_write_text(run_dir / "samples.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in present))
    results["backbone"] = read_json(run_dir / "backbone.json")
    results["resolution"] = (results["backbone"] or {}).get("resolution")
    results["method_setup"] = read_json(run_dir / "method.json")
    results["complete"] = len(present) == len(ids)
    results["missing"] = len(ids) - len(present)
    results.setdefault("timing", {})["edit_s_total"] = float(sum(r.get("wall_time_s") or 0.0 for r in present))
    results.setdefault("dataset_metrics", previous.get("dataset_metrics", {}) if results["complete"] else {})
    results |= aggregate(present, higher)
    results["counts"]["expected"] = len(ids)
    atomic_write_json(run_dir / "results.json", results)
    return results


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``: workers sharing a results folder assemble one at a time."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"

    def __enter__(self) -> RunLock:
        import fcntl

        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
