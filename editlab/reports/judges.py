"""Judge reports from stored results: each judge's reliability, the protocols' own aggregates, and each judge's
agreement with a truth.

- **Reliability** per judge metric: samples judged, judge failures (no parseable reply or server error) and
  their rate with a Wilson 95% interval, parse failures per reply, the model ids the server reported.
- **Protocol aggregates**: a protocol's ``aggregate`` spec (recorded with every judge column) applied to its
  column: per group (GEdit task group, ImgEdit edit type, task type) mean and n, and the overall value as the
  protocol defines it (``mean_of_groups``: GEdit's and ImgEdit's mean of group means; ``mean_of_samples``), per
  subset (GEdit's intersection) and split (GEdit's instruction language).
- **Agreement** of every judge column with a truth over the same edits (pooled over the methods of a dataset):
  Spearman's rho and Kendall's tau-b (scipy, with p-values) and pairwise accuracy (over pairs of edits whose
  truth differs, the share the judge orders the same way; judge ties count half; 0.5 is chance). Truths: the
  ShapesWorld oracle's ``edit_acc`` / ``preservation`` (exact ground truth: the one benchmark where a judge's
  accuracy can be measured), and human ratings from editlab's rating pages (Likert criteria averaged over raters,
  or A/B choices, where pairwise accuracy is the share of decided comparisons the judge decides the same way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from editlab.files import atomic_write_text

ORACLE_CLASSES = {"editlab.metrics.world.EditAccuracy": "edit_acc",
                  "editlab.metrics.world.Preservation": "preservation"}


def judge_columns(runs: list[Any]) -> dict[str, dict[str, Any]]:
    """Every judge column of ``runs`` with its recorded definition."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        for name, d in run.definitions().items():
            if isinstance(d, dict) and d.get("judge_metric"):
                out.setdefault(name, d)
    return out


def oracle_columns(runs: list[Any]) -> dict[str, str]:
    """Columns recorded as the ShapesWorld oracle's, by their recorded names ({column: 'edit_acc' | 'preservation'})."""
    out = {}
    for run in runs:
        for name, d in run.definitions().items():
            kind = ORACLE_CLASSES.get((d or {}).get("class", "")) if isinstance(d, dict) else None
            if kind:
                out[name] = kind
    return out


def long_frame(runs: list[Any]) -> pd.DataFrame:
    """One row per scored successful edit: method label, sample id, task type and every metric value."""
    rows = []
    for run in runs:
        for rec in run.records:
            if rec.get("status") != "ok" or rec.get("scored") is False:
                continue
            rows.append({"method": run.label, "sample_id": rec["id"], "task_type": rec.get("task_type"),
                         **{k: (np.nan if v is None else v) for k, v in (rec.get("metrics") or {}).items()}})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------
# Agreement statistics
# --------------------------------------------------------------------------------------------------------
def pairwise_accuracy(judge: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """Over pairs (i, j) with truth_i != truth_j: the share where the judge orders i, j as the truth does (judge
    ties count half). Returns (accuracy, number of pairs); NaN when no pair differs."""
    j, t = np.asarray(judge, float), np.asarray(truth, float)
    dt = np.sign(t[:, None] - t[None, :])
    dj = np.sign(j[:, None] - j[None, :])
    upper = np.triu(np.ones_like(dt, dtype=bool), 1) & (dt != 0)
    n = int(upper.sum())
    if n == 0:
        return float("nan"), 0
    score = np.where(dj[upper] == 0, 0.5, (dj[upper] == dt[upper]).astype(float))
    return float(score.mean()), n


def agreement(judge: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Spearman, Kendall (tau-b) with p-values, and pairwise accuracy over the finite pairs of values."""
    from scipy import stats

    judge, truth = np.asarray(judge, float), np.asarray(truth, float)
    ok = np.isfinite(judge) & np.isfinite(truth)
    j, t = judge[ok], truth[ok]
    out: dict[str, Any] = {"n": int(ok.sum())}
    if out["n"] >= 3 and np.ptp(j) > 0 and np.ptp(t) > 0:
        rho, p_rho = stats.spearmanr(j, t)
        tau, p_tau = stats.kendalltau(j, t)
        out |= {"spearman": float(rho), "spearman_p": float(p_rho), "kendall": float(tau), "kendall_p": float(p_tau)}
    else:
        out |= {"spearman": float("nan"), "spearman_p": float("nan"), "kendall": float("nan"),
                "kendall_p": float("nan")}
    out["pairwise_accuracy"], out["pairs"] = pairwise_accuracy(j, t)
    return out


def oracle_agreement(runs: list[Any]) -> pd.DataFrame:
    """Each judge column against each oracle column over the same edits."""
    judges, oracles = judge_columns(runs), oracle_columns(runs)
    df = long_frame(runs)
    rows = []
    for jc in judges:
        for oc, kind in oracles.items():
            if jc not in df or oc not in df:
                continue
            rows.append({"judge column": jc, "aspect": judges[jc].get("aspect"), "truth": f"oracle {kind} ({oc})",
                         **agreement(df[jc].to_numpy(float), df[oc].to_numpy(float))})
    return pd.DataFrame(rows)


def human_agreement(runs: list[Any], rating_files: list[Path], key_path: Path) -> pd.DataFrame:
    """Each judge column against human ratings made on an editlab rating page (joined by method label and sample)."""
    import json

    from editlab.reports.human import CRITERIA, comparisons_from, likert_frame, load_ratings

    key = json.loads(Path(key_path).read_text())
    ratings = load_ratings(rating_files)
    ratings = ratings[ratings["page_id"] == key["page_id"]]
    df = long_frame(runs)
    judges = judge_columns(runs)
    rows: list[dict[str, Any]] = []
    if df.empty or ratings.empty:
        return pd.DataFrame(rows)
    index = df.set_index(["method", "sample_id"])
    if key["mode"] == "likert":
        lf = likert_frame(ratings, key)
        lf["overall"] = lf[list(CRITERIA)].mean(axis=1)
        human = lf.groupby(["method", "sample_id"])[[*CRITERIA, "overall"]].mean().add_prefix("human ")
        joined = human.join(index, how="inner")
        for jc in judges:
            if jc not in joined:
                continue
            for crit in (*CRITERIA, "overall"):
                rows.append({"judge column": jc, "aspect": judges[jc].get("aspect"),
                             "truth": f"human {crit} (mean of raters)",
                             **agreement(joined[jc].to_numpy(float), joined[f"human {crit}"].to_numpy(float))})
        return pd.DataFrame(rows)
    comps = comparisons_from(ratings, key)
    decided = comps[comps["score"] != 0.5]
    for jc in judges:
        if jc not in index:
            continue
        values = index[jc]
        agree = []
        for r in decided.itertuples(index=False):
            a, b = values.get((r.a, r.sample_id)), values.get((r.b, r.sample_id))
            if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
                continue
            agree.append(0.5 if a == b else float((a > b) == (r.score == 1.0)))
        rows.append({"judge column": jc, "aspect": judges[jc].get("aspect"), "truth": "human A/B choices",
                     "n": len(agree), "spearman": np.nan, "spearman_p": np.nan, "kendall": np.nan, "kendall_p": np.nan,
                     "pairwise_accuracy": float(np.mean(agree)) if agree else np.nan, "pairs": len(agree)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------
# Reliability and protocol aggregates
# --------------------------------------------------------------------------------------------------------
def reliability(runs: list[Any]) -> pd.DataFrame:
    """Per judge metric and method: samples, judge failures (rate, Wilson 95% CI), replies and parse failures."""
    from editlab.reports.pilot import wilson_interval

    judges = judge_columns(runs)
    metrics = sorted({d["judge_metric"] for d in judges.values()})
    rows = []
    for run in runs:
        for jm in metrics:
            cols = [c for c, d in judges.items() if d["judge_metric"] == jm]
            judged = failed = replies = parse_fail = 0
            served: set[str] = set()
            for rec in run.records:
                payload = (rec.get("judgements") or {}).get(jm)
                if payload is None:
                    continue
                judged += 1
                failed += any((rec.get("metric_errors") or {}).get(c) for c in cols)
                for q in payload.get("queries", {}).values():
                    for att in q.get("attempts", []):
                        replies += "reply" in att
                        parse_fail += "parse_error" in att
                        if att.get("served_model"):
                            served.add(att["served_model"])
            if not judged:
                continue
            lo, hi = wilson_interval(failed, judged)
            rows.append({"judge": jm, "method": run.label, "samples judged": judged, "judge failures": failed,
                         "failure rate": failed / judged, "failure CI low": lo, "failure CI high": hi,
                         "replies": replies, "unparseable replies": parse_fail,
                         "parse failure rate": parse_fail / replies if replies else np.nan,
                         "served models": ", ".join(sorted(served)) or "-"})
    return pd.DataFrame(rows)


def protocol_aggregates(runs: list[Any]) -> pd.DataFrame:
    """Each judge column aggregated as its protocol says, per method: groups, overall, subsets and splits."""
    judges = judge_columns(runs)
    rows = []
    for run in runs:
        for col, d in judges.items():
            spec = (d.get("protocol") or {}).get("aggregate") or {}
            jm = d["judge_metric"]
            items = []
            for rec in run.records:
                if rec.get("status") != "ok" or rec.get("scored") is False:
                    continue
                v = (rec.get("metrics") or {}).get(col)
                fields = ((rec.get("judgements") or {}).get(jm) or {}).get("fields") or {}
                if jm not in (rec.get("judgements") or {}):
                    continue
                items.append({"value": np.nan if v is None else float(v), **fields,
                              "task_type": fields.get("task_type", rec.get("task_type"))})
            if not items:
                continue
            frame = pd.DataFrame(items)
            group = spec.get("group_by") or "task_type"
            splits = [(None, frame)]
            split_by = spec.get("split_by")
            if split_by and split_by in frame:
                splits = [(s, f) for s, f in frame.groupby(split_by, dropna=False)]
            for split_value, part in splits:
                subsets = [("all", part)] + [(name, part[part[field].astype(bool)])
                                            for name, field in (spec.get("subsets") or {}).items() if field in part]
                for subset, sub in subsets:
                    groups = sub.groupby(sub[group].fillna("-") if group in sub else pd.Series("-", index=sub.index))
                    means = groups["value"].mean()
                    overall = float(means.mean()) if spec.get("overall") == "mean_of_groups" else float(
                        sub["value"].mean())
                    row = {"column": col, "method": run.label, "split": split_value if split_value is not None else "",
                           "subset": subset, "n": int(sub["value"].notna().sum()),
                           "failed": int(sub["value"].isna().sum()), "overall": overall,
                           "overall rule": spec.get("overall", "mean_of_samples")}
                    row |= {f"{group}={g}": float(m) for g, m in means.items()}
                    rows.append(row)
    return pd.DataFrame(rows)


def _md(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    return frame.to_markdown(index=False, floatfmt=floatfmt) if not frame.empty else "(none)"


def render_judges(runs: list[Any], out_dir: Path, rating_files: list[Path] | None = None,
                  rating_key: Path | None = None) -> dict[str, Path]:
    """Write ``judges.md`` and ``judges_*.csv`` (reliability, protocol aggregates, agreement) into ``out_dir``."""
    out_dir = Path(out_dir)
    rel, agg, oracle = reliability(runs), protocol_aggregates(runs), oracle_agreement(runs)
    human = human_agreement(runs, rating_files, rating_key) if rating_files and rating_key else pd.DataFrame()
    lines = ["# Judges", "",
             "Judge failures (no parseable reply after the re-asks, or a server error) are recorded per sample with "
             "the raw replies and never replaced by a number.", "", "## Reliability", "", _md(rel), "",
             "## Protocol aggregates", "", _md(agg), "",
             "## Agreement with the ShapesWorld oracle (exact truth)", "",
             "Pairwise accuracy 0.5 is chance; Spearman / Kendall near 0 is no agreement.", "", _md(oracle)]
    if not human.empty:
        lines += ["", "## Agreement with human ratings", "", _md(human)]
    md = "\n".join(lines) + "\n"
    paths = {"md": out_dir / "judges.md"}
    atomic_write_text(paths["md"], md)
    for name, frame in (("reliability", rel), ("aggregates", agg), ("agreement_oracle", oracle),
                        ("agreement_human", human)):
        if not frame.empty:
            paths[name] = out_dir / f"judges_{name}.csv"
            atomic_write_text(paths[name], frame.to_csv(index=False))
    return paths
