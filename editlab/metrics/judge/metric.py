"""A vision-language-model judge as an editlab metric: one protocol, one judge, several columns.

:class:`JudgeMetric` sends each sample's queries (a protocol's prompts with its images) to an OpenAI-compatible
server, parses every reply with the protocol's parser and combines the parsed sub-scores into the protocol's
columns, named ``<column>[<judge label>]`` (e.g. ``vie_sc[qwen2.5-vl-72b-instruct]``), so a changed judge is a
new column. Nothing is guessed: a reply that cannot be parsed is asked again with the next seed, up to
``parse_retries`` times; then the columns that need it get the value None, a specific message in
``metric_errors`` and the raw replies in the record (``judgements[<protocol>[<label>]]``). Every reply is kept in
the response cache (:mod:`editlab.metrics.judge.cache`), so a rerun sends nothing.
"""

from __future__ import annotations

import datetime
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from editlab.metrics.base import EditBatch, EditMetric, MetricUnavailable, SampleScores
from editlab.metrics.judge.cache import JudgeCache, cache_key
from editlab.metrics.judge.client import JudgeClient, JudgeServerError, encode_image
from editlab.metrics.judge.parsers import ParseError, get_parser
from editlab.metrics.judge.protocol import Protocol, ProtocolUnavailable, Query, evaluate, names_in

DECODING_KEYS = ("temperature", "top_p", "max_tokens", "seed")


def judge_label(model: str) -> str:
    """A column-friendly judge name from a model id: ``Qwen/Qwen2.5-VL-72B-Instruct`` -> ``qwen2.5-vl-72b-instruct``,
    a local folder -> its last component."""
    tail = model.rstrip("/").split("/")[-1] or model
    return re.sub(r"[^a-z0-9._-]+", "-", tail.lower()).strip("-") or "judge"


def _absent(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _to_pil(t: torch.Tensor) -> Image.Image:
    arr = (t.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


@dataclass
class QueryResult:
    values: list[float] | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    server_error: bool = False


class JudgeMetric(EditMetric):
    """One judge protocol against one judge endpoint; columns ``<column>[<label>]``."""

    multi_column = True
    higher_is_better = True

    def __init__(self, protocol: dict[str, Any], client: dict[str, Any], label: str | None = None,
                 decoding: dict[str, Any] | None = None, parse_retries: int = 2, cache_dir: str | None = None,
                 prompt_root: str = "data/judge", fields: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            self.protocol = Protocol(protocol, prompt_root=prompt_root)
        except ProtocolUnavailable as err:
            raise MetricUnavailable(str(err)) from err
        client = dict(client)
        if not client.get("model"):
            raise ValueError(f"judge {self.protocol.name}: client.model is empty (set it, or EDITLAB_JUDGE_MODEL)")
        self.client_cfg = client
        self.label = label or judge_label(str(client["model"]))
        self.decoding = {k: None for k in DECODING_KEYS} | dict(self.protocol.decoding) | dict(decoding or {})
        unknown = set(self.decoding) - set(DECODING_KEYS)
        if unknown:
            raise ValueError(f"judge decoding: unknown settings {sorted(unknown)}; known: {', '.join(DECODING_KEYS)}")
        self.parse_retries = int(parse_retries)
        self.cache = JudgeCache(cache_dir)
        self.extra_fields = dict(fields or {}) | dict(self.protocol.fields)
        self.name = f"{self.protocol.name}[{self.label}]"
        self.definition = f"{self.protocol.name} judged by {client['model']}"
        self.version = self.protocol.version
        self._client: JudgeClient | None = None
        self._lock = threading.Lock()
        self._dead: str | None = None
        self.stats: dict[str, Any] = {"calls": 0, "cache_hits": 0, "parse_failures": 0, "failed_queries": 0,
                                      "queries": 0, "served_models": [], "server": None}

    # ----------------------------------------------------------------------------------------------------
    # Description
    # ----------------------------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        return [f"{c}[{self.label}]" for c in self.protocol.columns]

    def judge_id(self) -> dict[str, Any]:
        """What the response cache keys a judge by: the model requested and the label (not the URL, so moving
        a server keeps its cache; not the key)."""
        return {"model": self.client_cfg["model"], "label": self.label}

    def extra_description(self) -> dict[str, Any]:
        safe_client = {k: v for k, v in self.client_cfg.items() if k in ("base_url", "model", "api_key_env")}
        return {"judge": {"label": self.label, **safe_client}, "protocol": self.protocol.describe(),
                "decoding": self.decoding, "parse_retries": self.parse_retries}

    def column_definitions(self) -> dict[str, dict[str, Any]]:
        base = self.describe()
        out = {}
        for key, col in self.protocol.columns.items():
            out[f"{key}[{self.label}]"] = base | {
                "name": f"{key}[{self.label}]", "column": key, "expr": col.expr, "aspect": col.aspect,
                "higher_is_better": col.higher_is_better, "range": col.range,
                # what a failed judgement scores under the tables' `failures=worst` policy: the scale's worst end
                "worst": None if not col.range else (col.range[0] if col.higher_is_better else col.range[1]),
                "definition": col.definition or f"{key} of {self.protocol.name}, judged by {self.client_cfg['model']}",
                "judge_metric": self.name, "this_run": dict(self.stats)}
        return out

    # ----------------------------------------------------------------------------------------------------
    # The client (made on the first request that is not in the cache)
    # ----------------------------------------------------------------------------------------------------
    def client(self) -> JudgeClient:
        with self._lock:
            if self._client is None:
                cfg = self.client_cfg
                self._client = JudgeClient(
                    base_url=str(cfg.get("base_url", "")), model=str(cfg["model"]), api_key_env=cfg.get("api_key_env"),
                    timeout_s=float(cfg.get("timeout_s", 120)), max_retries=int(cfg.get("max_retries", 4)),
                    backoff_s=float(cfg.get("backoff_s", 1.0)), concurrency=int(cfg.get("concurrency", 4)))
                try:
                    self.stats["server"] = self._client.server_info()
                except JudgeServerError as err:
                    self._dead = str(err)
            return self._client

    # ----------------------------------------------------------------------------------------------------
    # Scoring
    # ----------------------------------------------------------------------------------------------------
    def sample_fields(self, batch: EditBatch, i: int) -> dict[str, Any]:
        meta = batch.meta[i] if i < len(batch.meta) else {}
        fields: dict[str, Any] = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
        fields |= dict(meta.get("judge_fields") or {})
        fields |= {
            "instruction": batch.instructions[i] if i < len(batch.instructions) else None,
            "source_prompt": batch.source_prompts[i] if i < len(batch.source_prompts) else None,
            "target_prompt": batch.target_prompts[i] if i < len(batch.target_prompts) else None,
            "task_type": batch.task_types[i] if i < len(batch.task_types) else None,
        }
        for name, spec in self.extra_fields.items():  # derived fields: the first present of a list of fields
            spec = spec if isinstance(spec, dict) else {"first": spec}
            options = spec["first"] if isinstance(spec["first"], list) else [spec["first"]]
            value = next((fields[o] for o in options if not _absent(fields.get(o))), None)
            fields[name] = spec.get("default") if value is None else value
        return fields

    def sample_images(self, batch: EditBatch, i: int) -> dict[str, Image.Image]:
        images = {"edited": _to_pil(batch.edited[i])}
        images["source"] = batch.source_images[i] if i < len(batch.source_images) else _to_pil(batch.source[i])
        if batch.target is not None:
            images["target"] = _to_pil(batch.target[i])
        return images

    def _content(self, query: Query, text: str, images: dict[str, Image.Image]) -> tuple[list[dict], list[str]]:
        parts, hashes, image_parts = [], [], []
        for role in query.images:
            if role not in images:
                raise KeyError(f"the sample has no {role} image")
            part, digest = encode_image(images[role], self.protocol.images.format, self.protocol.images.jpeg_quality)
            caption = query.captions.get(role)
            image_parts += ([{"type": "text", "text": caption}] if caption else []) + [part]
            hashes.append(digest)
        text_part = [{"type": "text", "text": text}]
        layout = query.layout or self.protocol.layout
        parts = image_parts + text_part if layout == "images_first" else text_part + image_parts
        return parts, hashes

    def run_query(self, query: Query, fields: dict[str, Any], images: dict[str, Image.Image]) -> QueryResult:
        """Ask one query, re-asking with the next seed while the reply cannot be parsed."""
        try:
            text = self.protocol.render(query, fields)
            content, hashes = self._content(query, text, self.protocol.images.prepare(images))
        except KeyError as err:
            return QueryResult(None, error=f"query '{query.name}' cannot be asked: {err.args[0]}")
        parser = get_parser(query.parser)
        result = QueryResult(None)
        base_seed = self.decoding.get("seed")
        for k in range(self.parse_retries + 1):
            decoding = dict(self.decoding)
            if base_seed is not None or k > 0:
                decoding["seed"] = int(base_seed or 0) + k
            key = cache_key(hashes, text, self.judge_id(), decoding)
            entry = self.cache.get(key)
            attempt: dict[str, Any] = {"seed": decoding.get("seed"), "cached": entry is not None}
            if entry is None:
                if self._dead is None:
                    self.client()
                if self._dead is not None:
                    return QueryResult(None, result.attempts, f"query '{query.name}': {self._dead}", server_error=True)
                try:
                    reply = self.client().chat(content, decoding)
                except JudgeServerError as err:
                    if "no server answers" in str(err):
                        self._dead = str(err)
                    result.attempts.append(attempt | {"server_error": str(err)})
                    result.error, result.server_error = f"query '{query.name}': {err}", True
                    return result
                entry = {"reply": reply.text, "served_model": reply.served_model, "finish_reason": reply.finish_reason,
                         "seconds": reply.seconds, "usage": reply.usage, "http_attempts": reply.attempts,
                         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
                self.cache.put(key, entry)
                with self._lock:
                    self.stats["calls"] += 1
                    self.stats.setdefault("first_call", entry["date"])
                    self.stats["last_call"] = entry["date"]
                    if reply.served_model and reply.served_model not in self.stats["served_models"]:
                        self.stats["served_models"].append(reply.served_model)
            else:
                with self._lock:
                    self.stats["cache_hits"] += 1
            attempt |= {k2: entry.get(k2) for k2 in ("reply", "served_model", "finish_reason", "date")}
            try:
                result.values = parser(entry["reply"], **query.parser_args)
            except ParseError as err:
                attempt["parse_error"] = str(err)
                result.attempts.append(attempt)
                with self._lock:
                    self.stats["parse_failures"] += 1
                continue
            result.attempts.append(attempt)
            return result
        last = result.attempts[-1].get("parse_error") if result.attempts else "no attempt"
        result.error = (f"query '{query.name}': no parseable reply in {self.parse_retries + 1} attempt(s) "
                        f"(last: {last})")
        return result

    def _columns_for(self, fields: dict[str, Any], results: dict[str, QueryResult]) -> SampleScores:
        out = SampleScores()
        env = {k: v for k, v in fields.items()}
        env |= {name: r.values for name, r in results.items() if r.values is not None}
        for key, col in self.protocol.columns.items():
            name = f"{key}[{self.label}]"
            try:
                if col.when is not None and not evaluate(col.when, env):
                    out.values[name] = None
                    continue
            except (KeyError, ValueError, TypeError, IndexError) as err:
                out.values[name] = None
                out.errors[name] = f"judge {self.label}: column condition failed: {err}"
                continue
            failed = [results[n].error for n in names_in(col.expr) if n in results and results[n].values is None]
            if failed:
                out.values[name] = None
                out.errors[name] = f"judge {self.label}: " + "; ".join(e for e in failed if e)
                continue
            try:
                value = float(evaluate(col.expr, env))
                if not math.isfinite(value):
                    raise ValueError(f"{col.expr} gave {value}")
            except KeyError as err:
                missing = re.search(r"reads '([^']+)'", str(err.args[0]))
                what = missing.group(1) if missing else str(err)
                kind = "query" if what in self.protocol.queries else "column" if what in self.protocol.columns \
                    else "sample field"
                out.values[name] = None
                out.errors[name] = f"judge {self.label}: {kind} '{what}' does not apply to this sample"
                continue
            except (ValueError, TypeError, IndexError, ZeroDivisionError) as err:
                out.values[name] = None
                out.errors[name] = f"judge {self.label}: cannot combine the parsed scores: {err}"
                continue
            out.values[name] = value
            env[key] = value
        return out

    def score_samples(self, batch: EditBatch) -> list[SampleScores]:
        n = len(batch)
        fields = [self.sample_fields(batch, i) for i in range(n)]
        images = [self.sample_images(batch, i) for i in range(n)]
        jobs: list[tuple[int, Query]] = []
        skipped: list[dict[str, str]] = [{} for _ in range(n)]
        for i in range(n):
            for q in self.protocol.queries.values():
                try:
                    if q.when is None or evaluate(q.when, fields[i]):
                        jobs.append((i, q))
                except (KeyError, ValueError, TypeError) as err:
                    skipped[i][q.name] = str(err)
        workers = max(1, int(self.client_cfg.get("concurrency", 4)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(self.run_query, q, fields[i], images[i]) for i, q in jobs]
            done = [f.result() for f in futures]
        per_sample: list[dict[str, QueryResult]] = [{} for _ in range(n)]
        for (i, q), res in zip(jobs, done):
            per_sample[i][q.name] = res
            with self._lock:
                self.stats["queries"] += 1
                self.stats["failed_queries"] += res.values is None
        out = []
        group_keys = [self.protocol.aggregate.get("group_by")] + list(self.protocol.aggregate.get("subsets") or {})
        for i in range(n):
            scores = self._columns_for(fields[i], per_sample[i])
            scores.retry = any(r.server_error for r in per_sample[i].values())
            for q, why in skipped[i].items():
                for name in scores.values:
                    if scores.values[name] is None and name not in scores.errors:
                        scores.errors[name] = f"judge {self.label}: query '{q}' condition failed: {why}"
            scores.payload[self.name] = {
                "protocol": self.protocol.name, "judge": self.label, "model": self.client_cfg["model"],
                "columns": list(scores.values),
                "fields": {k: fields[i].get(k) for k in group_keys if k},
                "queries": {name: {"values": r.values, "error": r.error, "attempts": r.attempts}
                            for name, r in per_sample[i].items()},
            }
            out.append(scores)
        return out

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        first = self.columns()[0]
        vals = [s.values.get(first) for s in self.score_samples(batch)]
        return torch.tensor([float("nan") if v is None else v for v in vals], dtype=torch.float32)


def load_protocol_file(path: str | Path) -> dict[str, Any]:
    """The protocol node of a ``configs/metrics/judge/*.yaml`` file (for scripts and tests)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    (node,) = [v for v in cfg.values() if isinstance(v, dict) or hasattr(v, "keys")]
    return OmegaConf.to_container(node["protocol"], resolve=False)
