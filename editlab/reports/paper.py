"""Published numbers beside ours, only like with like.

Reference tables live as data in ``editlab/reports/data/*.yaml`` (values in the paper's printed units, each
column with its ``scale``, the exact editlab column it corresponds to, and where each value was read). A run
whose dataset (by alias) and method (inversion and editor, by alias) match a reference row is set beside it
only when it was made like the paper's numbers (:func:`like_with_like`): the full dataset (the table's
``n_samples``), the paper's backbone, its resolution, its metric definitions (exact column names, mode,
definition versions) and its scoring input (PIE-Bench scored JPEG files). Then the comparison lists, per
column, the published value, ours in the same units with its bootstrap 95% CI, and the difference ours -
paper. Otherwise the report says which of these differ, and shows no difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

DATA_DIR = Path(__file__).parent / "data"

INVERSION_ALIASES = {
    "ddim": {"ddim", "ddim_inversion"},
    "nti": {"nti", "nt", "null-text", "null_text", "nulltext", "null-text-inversion"},
    "npi": {"npi", "np", "negative-prompt", "negative_prompt", "negative-prompt-inversion"},
    "styled": {"styled", "stylediffusion", "style_diffusion"},
    "direct": {"direct", "directinversion", "direct_inversion", "di", "pnp_inversion", "pnpinversion", "pnpinv"},
    "edict": {"edict"},
    "ddpm": {"ddpm", "edit-friendly", "edit_friendly", "edit-friendly-inversion"},
}
EDITOR_ALIASES = {
    "p2p": {"p2p", "prompt-to-prompt", "prompt_to_prompt", "prompt2prompt", "ptp"},
    "masactrl": {"masactrl", "masa_ctrl", "masa-ctrl"},
    "pnp": {"pnp", "plug-and-play", "plug_and_play", "plugandplay"},
    "pix2pix_zero": {"pix2pix_zero", "pix2pix-zero", "p2p-zero", "p2p_zero", "p2pzero"},
}


def canonical(name: str | None, aliases: dict[str, set[str]]) -> str | None:
    """The canonical part name for any known spelling (case-insensitive), else the lower-cased name."""
    if name is None:
        return None
    key = str(name).strip().lower()
    return next((canon for canon, names in aliases.items() if key in names), key)


def _norm_dataset(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "").replace(" ", "")


def reference_tables(data_dir: Path = DATA_DIR) -> list[dict[str, Any]]:
    """Every reference table shipped with editlab (sorted by file name)."""
    return [yaml.safe_load(p.read_text(encoding="utf-8")) | {"file": p.name} for p in sorted(data_dir.glob("*.yaml"))]


@dataclass
class PaperComparison:
    frame: pd.DataFrame
    markdown: str
    html: str


def _ours(run: Any, metric: str, mode: str, scale: float) -> dict[str, Any] | None:
    definition = run.definitions().get(metric)
    agg = (run.results.get("metrics") or {}).get(metric)
    if definition is None or definition.get("mode") != mode or not agg or not agg.get("n"):
        return None
    mean = agg.get("mean")
    if mean is None or not np.isfinite(mean):
        return None
    lo, hi = agg.get("ci_low"), agg.get("ci_high")
    return {"ours": mean * scale, "ours_ci_low": None if lo is None else lo * scale,
            "ours_ci_high": None if hi is None else hi * scale, "ours_n": int(agg["n"])}


def _matches(run: Any, table: dict[str, Any]) -> list[dict[str, Any]]:
    """The reference rows of ``table`` whose dataset and method ``run`` shares."""
    aliases = {_norm_dataset(a) for a in table.get("dataset_aliases", [])}
    parts = run.parts
    if _norm_dataset(run.dataset) not in aliases or not parts:
        return []
    editor, inversion = canonical(parts[0], EDITOR_ALIASES), canonical(parts[1], INVERSION_ALIASES)
    return [ref for ref in table.get("rows", []) if (canonical(ref["editor"], EDITOR_ALIASES),
                                                     canonical(ref["inversion"], INVERSION_ALIASES))
            == (editor, inversion)]


def like_with_like(run: Any, table: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """How ``run`` was made differently from the table's numbers: (differences that rule out the whole run,
    {column key: difference} for columns computed differently). Columns the run lacks are not differences."""
    req = table.get("requires") or {}
    res = run.results
    whole: list[str] = []
    counts = res.get("counts") or {}
    expected = counts.get("expected", counts.get("total"))
    n = req.get("n_samples")
    if n is not None and (expected != n or not res.get("complete", True)):
        missing = "" if res.get("complete", True) else f", {res.get('missing')} not edited yet"
        whole.append(f"dataset: {expected} samples{missing} (paper: all {n})")
    backbone = res.get("backbone") or {}
    aliases = {str(a).lower() for a in req.get("backbone_aliases", [])}
    names = {str(backbone.get(k, "")).lower() for k in ("source", "name")} - {""}
    if aliases and not (names & aliases):
        whole.append(f"backbone: {backbone.get('source') or backbone.get('name') or '?'} "
                     f"(paper: {req['backbone_aliases'][0]})")
    resolution = res.get("resolution", backbone.get("resolution"))
    if req.get("resolution") is not None and resolution != req["resolution"]:
        whole.append(f"resolution: {resolution} (paper: {req['resolution']})")
    quality = (res.get("metrics_input") or {}).get("jpeg_quality")
    if "jpeg_quality" in req and quality != req["jpeg_quality"]:
        whole.append(f"edits scored as {'PNG' if quality is None else f'JPEG q{quality}'} (paper: JPEG "
                     f"q{req['jpeg_quality']}; metrics._input_.jpeg_quality={req['jpeg_quality']})")
    definitions = run.definitions()
    columns: dict[str, str] = {}
    for key, col in table["columns"].items():
        label, metric = col.get("label", key), col["metric"]
        d = definitions.get(metric)
        if d is None:
            others = sorted(m for m in definitions if m.split("[")[0] == metric.split("[")[0])
            if others:
                columns[key] = f"{label}: column {', '.join(others)} (paper's: {metric})"
            continue
        if d.get("mode") != table.get("metric_mode"):
            columns[key] = f"{label}: metric mode {d.get('mode')} (paper: {table.get('metric_mode')})"
        elif col.get("version") is not None and str(d.get("version")) != str(col["version"]):
            columns[key] = f"{label}: definition version {d.get('version')} (paper's: {col['version']})"
    return whole, columns


def compare_runs(runs: list[Any], table: dict[str, Any]) -> pd.DataFrame:
    """Long comparison of the comparable ``runs`` (:class:`editlab.bench.tables.LoadedRun`) with one table."""
    mode = table.get("metric_mode")
    sources = table.get("read_from_sources") or {}
    rows = []
    for run in runs:
        whole, columns = like_with_like(run, table)
        if whole:
            continue
        for ref in _matches(run, table):
            for key, col in table["columns"].items():
                if key in columns:
                    continue
                published = (ref.get("values") or {}).get(key)
                ours = _ours(run, col["metric"], mode, float(col.get("scale", 1.0)))
                if published is None or ours is None:
                    continue
                higher = bool(col.get("higher_is_better", True))
                diff = ours["ours"] - float(published)
                rows.append({
                    "reference": table.get("name"), "reference_row": ref["label"], "method": run.label,
                    "column": col.get("label", key), "metric": col["metric"], "scale": col.get("scale", 1.0),
                    "higher_is_better": higher, "paper": float(published), **ours, "diff": diff,
                    "ours_better": (diff > 0) == higher if diff != 0 else None,
                    "paper_in_ours_ci": (ours["ours_ci_low"] is not None and ours["ours_ci_high"] is not None
                                         and ours["ours_ci_low"] <= float(published) <= ours["ours_ci_high"]),
                    "backbone": (run.backbone or {}).get("name"),
                    "read_from": sources.get((ref.get("read_from") or {}).get(key, "default"), ""),
                })
    return pd.DataFrame(rows)


def not_comparable(runs: list[Any], table: dict[str, Any]) -> dict[str, list[str]]:
    """Runs matching a reference row by dataset and method but made differently (as a whole, or in some
    columns): label -> the differences."""
    out = {}
    for run in runs:
        if not _matches(run, table):
            continue
        whole, columns = like_with_like(run, table)
        if whole or columns:
            out[run.label] = whole + [f"not compared: {c}" for c in columns.values()]
    return out


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def compare_with_papers(runs: list[Any], data_dir: Path = DATA_DIR) -> PaperComparison | None:
    """Comparisons with every shipped reference table that some run matches; None when none does."""
    from editlab.reports.html import esc

    frames, md_parts, html_parts = [], [], []
    for table in reference_tables(data_dir):
        blocked = not_comparable(runs, table)
        if blocked:
            title = f"Paper comparison: {table.get('name')}: made differently for {len(blocked)} run(s)"
            items = [f"{label}: {'; '.join(diff)}" for label, diff in sorted(blocked.items())]
            md_parts.append(f"{title} (no difference is shown where a run or column differs)\n\n"
                            + "\n".join(f"- {item}" for item in items))
            html_parts.append(f"<h2>{esc(title)}</h2><p>No difference is shown where a run or column differs "
                              f"from how the paper's numbers were made.</p>"
                              f"<ul>{''.join(f'<li>{esc(i)}</li>' for i in items)}</ul>")
        df = compare_runs(runs, table)
        if df.empty:
            continue
        frames.append(df)
        columns = list(dict.fromkeys(df["column"]))
        arrows = {c: "↑" if df.loc[df["column"] == c, "higher_is_better"].iloc[0] else "↓" for c in columns}
        wide = []
        for (method, ref), sub in df.groupby(["method", "reference_row"], sort=True):
            row = {"ours": method, "paper row": ref}
            for c in columns:
                hit = sub[sub["column"] == c]
                if hit.empty:
                    row[f"{c} {arrows[c]}"] = "–"
                    continue
                h = hit.iloc[0]
                mark = "" if h["paper_in_ours_ci"] else " †"
                row[f"{c} {arrows[c]}"] = f"{_fmt(h['ours'])} / {_fmt(h['paper'])} ({h['diff']:+.2f}){mark}"
            wide.append(row)
        wide_df = pd.DataFrame(wide)
        src = table.get("source", {})
        title = f"Paper comparison: {table.get('name')} (ours / paper (ours - paper), paper units)"
        cite = f"Source: {' '.join(str(src.get('citation', '')).split())} {src.get('url', '')}".strip()
        setting = f"Paper setting: {src.get('setting', '?')}. Ours: backbone " + ", ".join(
            sorted({str(b) for b in df["backbone"]})) + f", n = {int(df['ours_n'].min())}–{int(df['ours_n'].max())}."
        note = ("†: the paper's value lies outside our bootstrap 95% CI of the mean. Values read from: "
                + "; ".join(sorted(set(df["read_from"]) - {""})) + ".")
        md_parts.append(f"{title}\n\n{wide_df.to_markdown(index=False)}\n\n{note}\n{cite}\n{setting}")
        head = "".join(f"<th>{esc(c)}</th>" for c in wide_df.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in wide_df.itertuples(False))
        html_parts.append(f"<h2>{esc(title)}</h2><table class=\"results\"><thead><tr>{head}</tr></thead>"
                          f"<tbody>{body}</tbody></table><p class=note>{esc(note)}<br>{esc(cite)}<br>"
                          f"{esc(setting)}</p>")
    if not md_parts:
        return None
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return PaperComparison(frame, "\n\n".join(md_parts), "".join(html_parts))
