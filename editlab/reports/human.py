"""Human evaluation: a blind rating page exported from stored results, and the analysis of its ratings.

Export (:func:`export_rating_page`) writes a static page and a key file:

- ``pairwise``: each item shows the source image, the instruction (or source -> target prompt) and two edits A
  and B of different methods in random order; the rater picks A, B or a tie (as ImagenHub / GenAI-Arena do);
- ``likert``: each item shows the source, the instruction and one edit, rated 1-10 on editing accuracy,
  preservation and visual quality (the rubric of the survey's LMM Score).

Method names appear only in ``rating_key.json``, never in the page. The page keeps answers in the browser
(local storage) and saves them as a JSON or CSV file. :func:`analyse_ratings` joins rating files with the key
and reports Elo and Bradley-Terry scores with bootstrap 95% CIs, per-method Likert means, and rater agreement
(Krippendorff's alpha: nominal for A/B/tie choices, interval for Likert scores). Likert ratings also yield
pairwise outcomes (per rater and sample, the method with the higher mean score wins) for Elo / Bradley-Terry.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from editlab.files import atomic_write_json, atomic_write_text, stable_hash
from editlab.reports.html import esc, image_data_uri, page, render

CRITERIA = ("accuracy", "preservation", "quality")
RUBRIC = {
    "accuracy": "Editing accuracy: does the edit do what the instruction asks? 1 = not at all, 10 = exactly.",
    "preservation": "Preservation: is everything the instruction does not ask to change kept as in the source? "
                    "1 = nothing kept, 10 = all kept.",
    "quality": "Visual quality: does the edited image look natural, without artefacts? 1 = unusable, 10 = flawless.",
}
CHOICES = ("A", "tie", "B")



# --------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------
def export_rating_page(runs: list[Any], out_dir: Path, mode: str = "pairwise", max_items: int = 100, seed: int = 0,
                       thumb: int = 320) -> dict[str, Path]:
    """Write ``rating_page.html`` and ``rating_key.json`` for ``runs`` (:class:`~editlab.bench.tables.LoadedRun`,
    one dataset) into ``out_dir``. Only scored samples that the compared methods edited successfully are used;
    a chained sample (a later turn of a multi-turn session) shows each edit beside the image that method edited
    (its own previous turn), not the dataset's input of the turn."""
    from editlab.reports.gallery import _Datasets

    if mode not in ("pairwise", "likert"):
        raise ValueError(f"mode must be 'pairwise' or 'likert', got {mode!r}")
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    done = [{rec["id"]: rec for rec in run.records if rec.get("status") == "ok" and rec.get("image")} for run in runs]
    ok = [{sid: rec for sid, rec in m.items() if rec.get("scored") is not False} for m in done]
    sample_ids = list(dict.fromkeys(sid for m in ok for sid in m))
    planned: list[tuple[str, list[int]]] = []
    for sid in sample_ids:
        have = [i for i, m in enumerate(ok) if sid in m]
        if mode == "pairwise":
            planned += [(sid, [a, b]) for a, b in combinations(have, 2)]
        else:
            planned += [(sid, [i]) for i in have]
    if mode == "pairwise" and len(runs) < 2:
        raise ValueError("a pairwise rating page needs at least two methods")
    rng.shuffle(planned)
    planned = planned[:max_items]
    datasets = _Datasets()
    items, key = [], {}
    for n, (sid, which) in enumerate(planned, start=1):
        if mode == "pairwise":
            rng.shuffle(which)
        rec = ok[which[0]][sid]
        item_id = f"i{n:04d}"
        source = None
        dataset = datasets.for_run(runs[which[0]].run_dir)
        if dataset is not None:
            try:
                source = image_data_uri(dataset.load(sid).source_image.convert("RGB"), thumb)
            except Exception:  # the rater still sees the edits and the instruction
                source = None
        edits = []
        for name, i in zip(("A", "B") if mode == "pairwise" else ("",), which):
            with Image.open(runs[i].run_dir / ok[i][sid]["image"]) as im:
                edit = {"name": name or "edit", "src": image_data_uri(im.convert("RGB"), thumb), "input": None}
            previous = done[i].get(ok[i][sid].get("chain_from") or "")
            if previous is not None:  # the method edited its own previous turn
                with Image.open(runs[i].run_dir / previous["image"]) as im:
                    edit["input"] = image_data_uri(im.convert("RGB"), thumb)
            edits.append(edit)
        chained = bool(rec.get("chain_from"))
        items.append({"id": item_id, "instruction": rec.get("instruction"), "source_prompt": rec.get("source_prompt"),
                      "target_prompt": rec.get("target_prompt"), "source": None if chained else source,
                      "chained": chained, "edits": edits})
        key[item_id] = ({"sample_id": sid, "A": runs[which[0]].label, "B": runs[which[1]].label}
                        if mode == "pairwise" else {"sample_id": sid, "method": runs[which[0]].label})
    page_id = stable_hash({"mode": mode, "key": key}, 8)
    html = render("rating.html", mode=mode, items=items, page_id=page_id, criteria=CRITERIA, rubric=RUBRIC,
                  choices=CHOICES, thumb=thumb)
    paths = {"page": out_dir / "rating_page.html", "key": out_dir / "rating_key.json"}
    atomic_write_text(paths["page"], html)
    atomic_write_json(paths["key"], {"page_id": page_id, "mode": mode, "seed": seed,
                                     "runs": [str(r.run_dir) for r in runs], "items": key})
    return paths


# --------------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------------
def load_ratings(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Rating files (the page's JSON or CSV) as one frame: page_id, mode, rater, item, choice / criteria."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    rows.append({k: (v if v != "" else None) for k, v in r.items()} | {"file": path.name})
        else:
            doc = json.loads(path.read_text(encoding="utf-8"))
            for r in doc.get("ratings", []):
                rows.append({"page_id": doc.get("page_id"), "mode": doc.get("mode"), "rater": doc.get("rater")} | r
                            | {"file": path.name})
    df = pd.DataFrame(rows)
    for c in CRITERIA:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if not df.empty:
        df["rater"] = df["rater"].fillna("anonymous").astype(str)
        # a rater who saved twice: the last file's answer counts
        df = df.drop_duplicates(["page_id", "rater", "item"], keep="last").reset_index(drop=True)
    return df


def comparisons_from(ratings: pd.DataFrame, key: dict[str, Any]) -> pd.DataFrame:
    """Pairwise outcomes (rater, item, sample_id, a, b, score of a: 1 win, 0.5 tie, 0 loss) from either mode."""
    items = key["items"]
    rows = []
    if key["mode"] == "pairwise":
        for r in ratings.itertuples(index=False):
            k = items.get(r.item)
            if k is None or r.choice not in CHOICES:
                continue
            score = {"A": 1.0, "tie": 0.5, "B": 0.0}[r.choice]
            rows.append({"rater": r.rater, "item": r.item, "sample_id": k["sample_id"], "a": k["A"], "b": k["B"],
                         "score": score})
        return pd.DataFrame(rows, columns=["rater", "item", "sample_id", "a", "b", "score"])
    scored = likert_frame(ratings, key)
    scored["overall"] = scored[list(CRITERIA)].mean(axis=1)
    for (rater, sid), grp in scored.groupby(["rater", "sample_id"], sort=True):
        per = grp.groupby("method")["overall"].mean().dropna()
        for a, b in combinations(sorted(per.index), 2):
            score = 1.0 if per[a] > per[b] else 0.0 if per[a] < per[b] else 0.5
            rows.append({"rater": rater, "item": f"{sid}", "sample_id": sid, "a": a, "b": b, "score": score})
    return pd.DataFrame(rows, columns=["rater", "item", "sample_id", "a", "b", "score"])


def likert_frame(ratings: pd.DataFrame, key: dict[str, Any]) -> pd.DataFrame:
    items = key["items"]
    df = ratings[ratings["item"].isin(list(items))].copy()
    df["sample_id"] = [items[i]["sample_id"] for i in df["item"]]
    df["method"] = [items[i]["method"] for i in df["item"]]
    for c in CRITERIA:
        if c not in df.columns:
            df[c] = np.nan
    return df


# --------------------------------------------------------------------------------------------------------
# Scores and agreement
# --------------------------------------------------------------------------------------------------------
def elo_ratings(comparisons: Sequence[tuple[str, str, float]], methods: Sequence[str], k: float = 16.0,
                base: float = 1000.0) -> dict[str, float]:
    """Sequential Elo over ``(a, b, score of a)`` in the given order."""
    r = {m: base for m in methods}
    for a, b, s in comparisons:
        expected = 1.0 / (1.0 + 10 ** ((r[b] - r[a]) / 400.0))
        r[a] += k * (s - expected)
        r[b] -= k * (s - expected)
    return r


def _win_matrix(ia: np.ndarray, ib: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    wins = np.zeros(n * n)
    np.add.at(wins, ia * n + ib, score)
    np.add.at(wins, ib * n + ia, 1.0 - score)
    return wins.reshape(n, n)


def _bt_strengths(wins: np.ndarray, prior: float = 0.5, iters: int = 500, tol: float = 1e-9) -> np.ndarray:
    """MM iterations (Hunter, 2004) with ``prior`` virtual games against a fixed opponent of strength 1."""
    games = wins + wins.T
    w = wins.sum(axis=1) + prior / 2
    p = np.ones(len(w))
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1) + prior / (p + 1.0)
        new = w / denom
        new /= np.exp(np.mean(np.log(new)))
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    return 400 * np.log10(p) + 1000


def bradley_terry(comparisons: Sequence[tuple[str, str, float]], methods: Sequence[str], prior: float = 0.5,
                  iters: int = 500) -> dict[str, float]:
    """Bradley-Terry strengths by the MM algorithm (Hunter, 2004), ties as half a win each, on an Elo-like scale
    (400 log10 strength + 1000). ``prior`` virtual games against a fixed average opponent keep unbeaten or
    winless methods finite."""
    idx = {m: i for i, m in enumerate(methods)}
    ia = np.array([idx[a] for a, _, _ in comparisons], dtype=int)
    ib = np.array([idx[b] for _, b, _ in comparisons], dtype=int)
    score = np.array([s for _, _, s in comparisons], dtype=float)
    strengths = _bt_strengths(_win_matrix(ia, ib, score, len(methods)), prior, iters)
    return {m: float(strengths[idx[m]]) for m in methods}


def scores_with_ci(comps: pd.DataFrame, n_boot: int = 1000, seed: int = 0, n_orders: int = 50) -> pd.DataFrame:
    """Elo (mean over ``n_orders`` random orders) and Bradley-Terry scores with percentile-bootstrap 95% CIs
    (comparisons resampled with replacement), plus each method's games and win rate (ties half)."""
    methods = sorted(set(comps["a"]) | set(comps["b"]))
    idx = {m: i for i, m in enumerate(methods)}
    ia = np.array([idx[a] for a in comps["a"]], dtype=int)
    ib = np.array([idx[b] for b in comps["b"]], dtype=int)
    score = comps["score"].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)

    def elo(order: np.ndarray) -> np.ndarray:
        r = np.full(len(methods), 1000.0)
        for a, b, s in zip(ia[order].tolist(), ib[order].tolist(), score[order].tolist()):
            delta = 16.0 * (s - 1.0 / (1.0 + 10 ** ((r[b] - r[a]) / 400.0)))
            r[a] += delta
            r[b] -= delta
        return r

    n = len(score)
    elo_point = np.mean([elo(rng.permutation(n)) for _ in range(n_orders)], axis=0)
    bt_point = _bt_strengths(_win_matrix(ia, ib, score, len(methods)))
    boot_elo, boot_bt = [], []
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        boot_elo.append(elo(pick))
        boot_bt.append(_bt_strengths(_win_matrix(ia[pick], ib[pick], score[pick], len(methods)), iters=200,
                                     tol=1e-6))
    boot_elo_arr, boot_bt_arr = np.array(boot_elo), np.array(boot_bt)
    rows = []
    for m, i in idx.items():
        games = int(((ia == i) | (ib == i)).sum())
        won = float(score[ia == i].sum() + (1.0 - score[ib == i]).sum())
        rows.append({"method": m, "games": games, "win_rate": won / games if games else np.nan,
                     "elo": elo_point[i], "elo_ci_low": np.percentile(boot_elo_arr[:, i], 2.5),
                     "elo_ci_high": np.percentile(boot_elo_arr[:, i], 97.5), "bt": bt_point[i],
                     "bt_ci_low": np.percentile(boot_bt_arr[:, i], 2.5),
                     "bt_ci_high": np.percentile(boot_bt_arr[:, i], 97.5)})
    return pd.DataFrame(rows).sort_values("bt", ascending=False, kind="stable").reset_index(drop=True)


def krippendorff_alpha(units: Iterable[Sequence[Any]], level: str = "nominal") -> float:
    """Krippendorff's alpha over units, each the list of values its raters gave (missing values left out).

    ``level``: nominal, ordinal, interval or ratio. Units with fewer than two values are not pairable and are
    ignored. NaN when fewer than two pairable values exist or all values agree trivially (no variation)."""
    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    if len(values) < 1 or not pairable:
        return float("nan")
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for u in pairable:
        counts = Counter(u)
        m = len(u)
        for c, nc in counts.items():
            for k, nk in counts.items():
                o[index[c], index[k]] += nc * (nk - (c == k)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if len(values) < 2 or n <= 1:
        return float("nan")
    vals = np.array(values, dtype=float) if level != "nominal" else None
    delta = np.zeros_like(o)
    for i in range(len(values)):
        for j in range(len(values)):
            if i == j:
                continue
            if level == "nominal":
                delta[i, j] = 1.0
            elif level == "interval":
                delta[i, j] = (vals[i] - vals[j]) ** 2
            elif level == "ratio":
                delta[i, j] = ((vals[i] - vals[j]) / (vals[i] + vals[j])) ** 2
            elif level == "ordinal":
                lo, hi = min(i, j), max(i, j)
                delta[i, j] = (n_c[lo:hi + 1].sum() - (n_c[i] + n_c[j]) / 2) ** 2
            else:
                raise ValueError(f"unknown level {level!r}")
    d_o = (o * delta).sum()
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    return float("nan") if d_e == 0 else float(1.0 - d_o / d_e)


def _units(df: pd.DataFrame, column: str) -> list[list[Any]]:
    return [list(g[column].dropna()) for _, g in df.groupby("item", sort=True)]


def _mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# --------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------
def find_key(rating_files: list[Path], explicit: Path | None = None, out_dir: Path | None = None) -> Path:
    """The key file: ``explicit``, else ``rating_key.json`` beside a rating file or in ``out_dir``."""
    if explicit is not None:
        return Path(explicit)
    for candidate in [f.parent / "rating_key.json" for f in rating_files] + (
            [Path(out_dir) / "rating_key.json"] if out_dir is not None else []):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("no rating_key.json beside the rating files; pass --rating-key")


def analyse_ratings(rating_files: list[Path], key_path: Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Scores, Likert means and agreement for rating files made with the page of ``key_path``."""
    key = json.loads(Path(key_path).read_text())
    ratings = load_ratings(rating_files)
    if ratings.empty:
        raise ValueError("the rating files hold no ratings")
    foreign = sorted(set(ratings["page_id"].dropna()) - {key["page_id"]})
    ratings = ratings[ratings["page_id"] == key["page_id"]]
    out: dict[str, Any] = {"mode": key["mode"], "page_id": key["page_id"], "raters": sorted(set(ratings["rater"])),
                           "n_ratings": len(ratings), "ignored_pages": foreign}
    comps = comparisons_from(ratings, key)
    out["comparisons"] = comps
    out["scores"] = scores_with_ci(comps, n_boot, seed) if not comps.empty else pd.DataFrame()
    if key["mode"] == "pairwise":
        out["alpha"] = {"choice (nominal)": krippendorff_alpha(_units(ratings, "choice"), "nominal")}
    else:
        lf = likert_frame(ratings, key)
        out["alpha"] = {f"{c} (interval)": krippendorff_alpha(_units(lf, c), "interval") for c in CRITERIA}
        rows = []
        for method, grp in lf.groupby("method", sort=True):
            row: dict[str, Any] = {"method": method, "ratings": len(grp)}
            for c in CRITERIA:
                row[c], row[f"{c}_ci_low"], row[f"{c}_ci_high"] = _mean_ci(grp[c].to_numpy(float), n_boot, seed)
            rows.append(row)
        out["likert"] = pd.DataFrame(rows)
    return out


def render_human(analysis: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``human_eval.md``, ``human_eval.html`` and the score / comparison CSVs into ``out_dir``."""
    out_dir = Path(out_dir)
    scores: pd.DataFrame = analysis["scores"]
    lines = [f"# Human evaluation ({analysis['mode']})", "",
             f"- {analysis['n_ratings']} ratings by {len(analysis['raters'])} rater(s); page {analysis['page_id']}."]
    if analysis["ignored_pages"]:
        lines.append(f"- Ignored ratings made on other pages: {', '.join(map(str, analysis['ignored_pages']))}.")
    lines.append("- Elo: K = 16, start 1000, mean over 50 random orders; Bradley-Terry: maximum likelihood, "
                 "400 log10 strength + 1000; 95% CIs by bootstrap over comparisons; ties count half.")
    if analysis["mode"] == "likert":
        lines.append("- Pairwise outcomes from Likert: per rater and sample, the higher mean of the three scores wins.")
    for name, a in analysis["alpha"].items():
        text = "n/a (no item rated by two raters)" if not np.isfinite(a) else f"{a:.3f}"
        lines.append(f"- Krippendorff's alpha, {name}: {text}")
    table = pd.DataFrame()
    if not scores.empty:
        table = pd.DataFrame({
            "method": scores["method"], "games": scores["games"],
            "win rate": [f"{v:.2f}" for v in scores["win_rate"]],
            "Elo (95% CI)": [f"{e:.0f} ({lo:.0f}–{hi:.0f})" for e, lo, hi in
                             zip(scores["elo"], scores["elo_ci_low"], scores["elo_ci_high"])],
            "Bradley-Terry (95% CI)": [f"{e:.0f} ({lo:.0f}–{hi:.0f})" for e, lo, hi in
                                       zip(scores["bt"], scores["bt_ci_low"], scores["bt_ci_high"])],
        })
        lines += ["", "## Scores", "", table.to_markdown(index=False, disable_numparse=True)]
    likert = analysis.get("likert")
    likert_table = pd.DataFrame()
    if likert is not None and not likert.empty:
        likert_table = pd.DataFrame({"method": likert["method"], "ratings": likert["ratings"].astype(str)} | {
            c: [f"{m:.2f} ({lo:.2f}–{hi:.2f})" for m, lo, hi in
                zip(likert[c], likert[f"{c}_ci_low"], likert[f"{c}_ci_high"])] for c in CRITERIA})
        lines += ["", "## Likert means (95% CI)", "", likert_table.to_markdown(index=False, disable_numparse=True)]
    md = "\n".join(lines) + "\n"

    def html_table(frame: pd.DataFrame) -> str:
        head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(False))
        return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    body = "<ul>" + "".join(f"<li>{esc(line[2:])}</li>" for line in lines[2:] if line.startswith("- ")) + "</ul>"
    if not table.empty:
        body += f"<h2>Scores</h2>{html_table(table)}"
    if not likert_table.empty:
        body += f"<h2>Likert means (95% CI)</h2>{html_table(likert_table)}"
    paths = {"md": out_dir / "human_eval.md", "html": out_dir / "human_eval.html",
             "scores": out_dir / "human_scores.csv", "comparisons": out_dir / "human_comparisons.csv"}
    atomic_write_text(paths["md"], md)
    atomic_write_text(paths["html"], page(f"Human evaluation ({analysis['mode']})", body))
    atomic_write_text(paths["scores"], scores.to_csv(index=False))
    atomic_write_text(paths["comparisons"], analysis["comparisons"].to_csv(index=False))
    if likert is not None and not likert.empty:
        paths["likert"] = out_dir / "human_likert.csv"
        atomic_write_text(paths["likert"], likert.to_csv(index=False))
    return paths
