"""The pilot report: one page for a team deciding whether to adopt a method.

Per method: model size (backbone parameters, and weight bytes from the parameter count and dtype), peak memory,
seconds per edit and edits per hour on the device used, cost per 1,000 edits at a given price per device-hour,
failure rate (with a Wilson 95% interval), and quality levelling (spread and worst decile of the main quality
metrics). The page states the hardware (the run's ``env.json``) and the dataset it was measured on.

Timing is the stored per-edit wall time: one edit at a time, models already loaded; loading time is excluded.

Labour saved (``--manual-minutes``) is acceptance-weighted: per attempted edit, saving = manual minutes x
accepted - review minutes - compute minutes, where *accepted* comes from a named source (``--accept``): the
ShapesWorld oracle (``oracle``: the requested attribute right and preservation at least a threshold), a metric or
judge column over a threshold (``metric:<column>>=<t>``), or human Likert ratings from the rating pages
(``human>=<t>``: the raters' mean overall score). Failed edits count as not accepted; edits without a verdict (no
rating, a judge failure) are left out and counted. The mean saving has a bootstrap 95% interval over edits and the
acceptance rate a Wilson interval. Without ``--accept`` only the upper bound (every edit accepted) is shown, so
labelled.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from editlab.files import atomic_write_text

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2, "float64": 8}


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (NaN when n is 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _human_bytes(n: float | None) -> str:
    if n is None or not np.isfinite(n):
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "–"


def _human_count(n: float | None) -> str:
    if n is None or not np.isfinite(n):
        return "–"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def parse_accept(spec: str) -> dict[str, Any]:
    """``oracle[:T]`` | ``metric:<column>>=<T>`` | ``human>=<T>`` -> {kind, column, threshold, label}."""
    import re

    if spec == "oracle" or spec.startswith("oracle:"):
        t = float(spec.split(":", 1)[1]) if ":" in spec else 1.0
        return {"kind": "oracle", "threshold": t,
                "label": f"ShapesWorld oracle (edit_acc = 1 and preservation >= {t:g})"}
    m = re.fullmatch(r"metric:(.+?)\s*>=\s*([-+0-9.eE]+)", spec)
    if m:
        return {"kind": "metric", "column": m.group(1), "threshold": float(m.group(2)),
                "label": f"{m.group(1)} >= {float(m.group(2)):g}"}
    m = re.fullmatch(r"human\s*>=\s*([-+0-9.eE]+)", spec)
    if m:
        return {"kind": "human", "threshold": float(m.group(1)),
                "label": f"human rating (mean overall of raters) >= {float(m.group(1)):g}"}
    raise ValueError(f"--accept must be oracle[:T], metric:<column>>=<T> or human>=<T>, got {spec!r}")


def acceptance(run: Any, accept: dict[str, Any],
               human: dict[tuple[str, str], float] | None = None) -> list[bool | None]:
    """Per attempted edit of ``run`` (ok or error, scored): accepted, not accepted, or None (no verdict)."""
    from editlab.reports.judges import oracle_columns

    out: list[bool | None] = []
    oracle = {v: k for k, v in oracle_columns([run]).items()}
    for rec in run.records:
        if rec.get("status") not in ("ok", "error") or rec.get("scored") is False:
            continue
        if rec["status"] == "error":
            out.append(False)
            continue
        values = rec.get("metrics") or {}
        if accept["kind"] == "oracle":
            acc, pres = values.get(oracle.get("edit_acc", "edit_acc")), values.get(oracle.get("preservation",
                                                                                              "preservation"))
            out.append(None if acc is None or pres is None else bool(acc >= 1.0 and pres >= accept["threshold"]))
        elif accept["kind"] == "metric":
            v = values.get(accept["column"])
            out.append(None if v is None or not np.isfinite(v) else bool(v >= accept["threshold"]))
        else:
            v = (human or {}).get((run.label, rec["id"]))
            out.append(None if v is None else bool(v >= accept["threshold"]))
    return out


def saving_with_ci(accepted: list[bool], manual_minutes: float, review_minutes: float, compute_minutes: float,
                   n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean minutes saved per edit (manual x accepted - review - compute) with a bootstrap 95% interval."""
    if not accepted:
        return float("nan"), float("nan"), float("nan")
    per = np.array([manual_minutes * float(a) for a in accepted]) - review_minutes - compute_minutes
    rng = np.random.default_rng(seed)
    means = per[rng.integers(0, per.size, (n_boot, per.size))].mean(axis=1)
    return float(per.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def pilot_rows(model: Any, price_per_hour: float, metrics: list[str] | None = None,
               manual_minutes: float | None = None, review_minutes: float = 0.0, accept: str | None = None,
               human: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """One row per method (numeric), from a table model (:func:`editlab.bench.tables.build_model`)."""
    from editlab.bench.tables import main_metrics

    metrics = metrics if metrics is not None else main_metrics(model.long, limit=3)
    rows = []
    for r in model.rows:
        run = r["run"]
        res = run.results
        agg = res.get("metrics") or {}
        backbone = run.backbone or {}
        params = backbone.get("parameters")
        bytes_per = DTYPE_BYTES.get(str(backbone.get("dtype", "")).replace("torch.", ""))
        times = [rec["wall_time_s"] for rec in run.records if rec.get("status") == "ok" and rec.get("wall_time_s")]
        mems = [rec["peak_mem_mb"] for rec in run.records if rec.get("status") == "ok" and rec.get("peak_mem_mb")]
        kinds = sorted({rec.get("peak_mem_kind") for rec in run.records if rec.get("peak_mem_kind")})
        counts = res.get("counts") or {}
        ok, err, na = int(counts.get("ok", 0)), int(counts.get("error", 0)), int(counts.get("not_applicable", 0))
        attempted = ok + err
        lo, hi = wilson_interval(err, attempted)
        mean_s = float(np.mean(times)) if times else float("nan")
        row: dict[str, Any] = {
            "method": r["meta"]["method"], "learning strategy": run.strategy, "backbone": backbone.get("name"),
            "parameters": params, "dtype": backbone.get("dtype"),
            "weight_bytes": params * bytes_per if params is not None and bytes_per else None,
            "peak_mem_mb_median": float(np.median(mems)) if mems else float("nan"),
            "peak_mem_mb_max": float(np.max(mems)) if mems else float("nan"), "peak_mem_kind": ", ".join(kinds),
            "s_per_edit_mean": mean_s, "s_per_edit_median": float(np.median(times)) if times else float("nan"),
            "s_per_edit_p90": float(np.percentile(times, 90)) if times else float("nan"),
            "edits_per_hour": 3600.0 / mean_s if mean_s > 0 else float("nan"),
            "cost_per_1000": price_per_hour * 1000.0 * mean_s / 3600.0 if np.isfinite(mean_s) else float("nan"),
            "ok": ok, "errors": err, "not_applicable": na,
            "failure_rate": err / attempted if attempted else float("nan"), "failure_ci_low": lo,
            "failure_ci_high": hi,
        }
        if manual_minutes is not None:
            compute_min = mean_s / 60.0 if np.isfinite(mean_s) else float("nan")
            row["minutes_saved_upper_bound"] = manual_minutes - review_minutes - compute_min
            if accept is not None:
                verdicts = acceptance(run, parse_accept(accept), human)
                known = [v for v in verdicts if v is not None]
                k = sum(known)
                row["accept_n"], row["accept_unjudged"] = len(known), len(verdicts) - len(known)
                row["acceptance"] = k / len(known) if known else float("nan")
                row["acceptance_ci_low"], row["acceptance_ci_high"] = wilson_interval(k, len(known))
                (row["minutes_saved_per_edit"], row["saved_ci_low"],
                 row["saved_ci_high"]) = saving_with_ci(known, manual_minutes, review_minutes, compute_min)
        for name in metrics:
            a = agg.get(name) or {}
            k = model.scale.get(name, 1.0)
            for key in ("mean", "std", "worst_decile"):
                v = a.get(key)
                row[f"{name} {key}"] = v * k if v is not None and a.get("n") else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _hardware(runs: list[Any]) -> list[str]:
    seen = []
    for run in runs:
        env = run.env
        line = (f"{env.get('device_name', '?')} (device {env.get('device', '?')}); torch {env.get('torch', '?')}, "
                f"diffusers {env.get('diffusers', '?')}, python {env.get('python', '?')}; {env.get('platform', '?')}; "
                f"editlab {env.get('editlab', '?')} at {env.get('git_revision') or 'unknown revision'}")
        if line not in seen:
            seen.append(line)
    return seen


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return format(v, spec)


def render_pilot(model: Any, out_dir: Path, price_per_hour: float = 2.0, currency: str = "USD",
                 manual_minutes: float | None = None, metrics: list[str] | None = None, review_minutes: float = 0.0,
                 accept: str | None = None, human: dict[tuple[str, str], float] | None = None) -> dict[str, Path]:
    """Write ``pilot.md``, ``pilot.html`` and ``pilot.csv`` into ``out_dir``."""
    from editlab.bench.tables import main_metrics
    from editlab.reports.html import esc, page

    out_dir = Path(out_dir)
    metrics = metrics if metrics is not None else main_metrics(model.long, limit=3)
    df = pilot_rows(model, price_per_hour, metrics, manual_minutes, review_minutes, accept, human)
    runs = model.runs
    datasets = sorted({run.dataset for run in runs})
    n_samples = sorted({int((run.results.get("counts") or {}).get("total", len(run.records))) for run in runs})
    hardware = _hardware(runs)

    cost_rows = []
    for _, r in df.iterrows():
        size = f"{_human_count(r['parameters'])} params"
        if r["weight_bytes"] is not None and np.isfinite(r["weight_bytes"] or np.nan):
            size += f", {_human_bytes(r['weight_bytes'])} ({r['dtype']})"
        row = {
            "method": r["method"], "model size": size,
            "peak memory (median / max)": (f"{_fmt(r['peak_mem_mb_median'], '.0f')} / "
                                           f"{_fmt(r['peak_mem_mb_max'], '.0f')} MB"),
            "s / edit (mean, p90)": f"{_fmt(r['s_per_edit_mean'], '.3g')} ({_fmt(r['s_per_edit_p90'], '.3g')})",
            "edits / hour": _fmt(r["edits_per_hour"], ",.0f"),
            f"{currency} / 1,000 edits": _fmt(r["cost_per_1000"], ",.2f"),
            "failure rate (95% CI)": (f"{_fmt(100 * r['failure_rate'], '.1f')}% "
                                      f"({_fmt(100 * r['failure_ci_low'], '.0f')}"
                                      f"–{_fmt(100 * r['failure_ci_high'], '.0f')}%)"),
            "n.a.": str(r["not_applicable"]),
        }
        if manual_minutes is not None and accept is not None:
            row["accepted (95% CI)"] = (f"{_fmt(100 * r['acceptance'], '.0f')}% "
                                        f"({_fmt(100 * r['acceptance_ci_low'], '.0f')}"
                                        f"–{_fmt(100 * r['acceptance_ci_high'], '.0f')}%), n={r['accept_n']}"
                                        + (f", {r['accept_unjudged']} unjudged" if r["accept_unjudged"] else ""))
            row["min saved / edit (95% CI)"] = (f"{_fmt(r['minutes_saved_per_edit'], '.2f')} "
                                                f"({_fmt(r['saved_ci_low'], '.2f')}–{_fmt(r['saved_ci_high'], '.2f')})")
        elif manual_minutes is not None:
            row["min saved / edit, upper bound (all accepted)"] = _fmt(r["minutes_saved_upper_bound"], ".2f")
        cost_rows.append(row)
    cost = pd.DataFrame(cost_rows)

    quality_rows = []
    for _, r in df.iterrows():
        row = {"method": r["method"]}
        for name in metrics:
            arrow = "↑" if model.higher.get(name, True) else "↓"
            row[f"{name} {arrow} mean ± std"] = f"{_fmt(r[f'{name} mean'], '.3g')} ± {_fmt(r[f'{name} std'], '.2g')}"
            row[f"{name} worst 10%"] = _fmt(r[f"{name} worst_decile"], ".3g")
        quality_rows.append(row)
    quality = pd.DataFrame(quality_rows)

    kinds = sorted({k for k in df["peak_mem_kind"] if k})
    facts = [
        f"Dataset: {', '.join(datasets)} ({', '.join(map(str, n_samples))} samples per method).",
        "Hardware: " + " | ".join(hardware) + ".",
        f"Price assumed: {price_per_hour:g} {currency} per device-hour (`--price-per-hour`); "
        "cost counts edit time only.",
        "Timing: stored wall time per edit, one edit at a time with models loaded (loading excluded).",
        "Peak memory: " + (", ".join(kinds) or "not recorded")
        + " (cuda_max_allocated: GPU memory allocated by torch; cpu_rss_sampled: process resident memory).",
        "Model size: backbone parameters; weight bytes = parameters x bytes of the stored dtype.",
        "Failure rate: errors / (ok + errors); n.a. = samples a method does not apply to (not failures).",
        "Quality levelling: spread (std) and worst decile (10th percentile when higher is better, else 90th) "
        "over samples; a level method has a worst decile close to its mean.",
    ]
    if manual_minutes is not None:
        facts.append(f"Labour saved per edit = {manual_minutes:g} manual minutes x accepted - {review_minutes:g} "
                     "review minutes - compute minutes (mean edit time); failed edits count as not accepted.")
        if accept is not None:
            facts.append(f"Acceptance source: {parse_accept(accept)['label']}; edits without a verdict are left out "
                         "(counted as unjudged). 95% CIs: Wilson (acceptance), bootstrap over edits (saving).")
        else:
            facts.append("No acceptance source given (--accept): the saving shown is an upper bound that assumes "
                         "every edit is accepted.")
    cost_md = cost.to_markdown(index=False, disable_numparse=True) if not cost.empty else "(no runs)"
    quality_md = quality.to_markdown(index=False, disable_numparse=True) if not quality.empty else "(no metrics)"
    md = "\n".join(["# Pilot report", "", *[f"- {f}" for f in facts], "", "## Cost and reliability", "", cost_md, "",
                    "## Quality and how level it is", "", quality_md]) + "\n"

    def table(frame: pd.DataFrame) -> str:
        head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(False))
        return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    body = ("<ul>" + "".join(f"<li>{esc(f.replace('`', ''))}</li>" for f in facts) + "</ul>"
            + f"<h2>Cost and reliability</h2>{table(cost)}<h2>Quality and how level it is</h2>{table(quality)}")
    paths = {"md": out_dir / "pilot.md", "html": out_dir / "pilot.html", "csv": out_dir / "pilot.csv"}
    atomic_write_text(paths["md"], md)
    atomic_write_text(paths["html"], page("Pilot report", body))
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    return paths
