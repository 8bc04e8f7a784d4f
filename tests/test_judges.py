"""VLM judges: reply parsers (never a guessed number), protocol expressions, prompt-source preparation, the client's
retries, and the whole path through a real OpenAI-compatible server (`transformers serve` with a tiny random
Qwen2-VL built locally) and the runner: requests with images, re-asks, unparseable replies recorded as failures
with their raw text, cache hits on rerun, agreement with the ShapesWorld oracle and the acceptance-weighted
pilot saving."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg

from editlab import ROOT
from editlab.metrics.base import EditBatch
from editlab.metrics.judge.client import JudgeClient, JudgeServerError
from editlab.metrics.judge.parsers import (
    ParseError,
    parse_imgedit_lines,
    parse_integers,
    parse_kris,
    parse_kris_dual,
    parse_rise_final_score,
    parse_vie,
)
from editlab.metrics.judge.protocol import evaluate
from editlab.metrics.judge.sources import SOURCES, extract_prompts, prepare

# --------------------------------------------------------------------------------------------------------
# Parsers: what the official scoring scripts read, and a failure where they would guess
# --------------------------------------------------------------------------------------------------------


def test_vie_parser_reads_what_gedit_reads_and_never_guesses() -> None:
    assert parse_vie('{"score": [7, 3], "reasoning": "ok"}') == [7.0, 3.0]
    assert parse_vie('blah ||V^=^V|| {"score": [5, 6], "reasoning": "x"} ||V^=^V|| tail') == [5.0, 6.0]
    assert parse_vie('Here: {\n"score" : [8,\n 9],\n"reasoning" : "fine"\n}') == [8.0, 9.0]
    assert parse_vie("[6, 0]") == [6.0, 0.0]
    assert parse_vie("4") == [4.0]
    assert parse_vie('{score: 7, reasoning: fine}') == [7.0]          # GEdit's fix_json repair
    # where GEdit's mllm_output_to_dict falls back to random.randint(0, 10), editlab raises
    for reply in ("I cannot evaluate these images.", "", "score: seven", '{"reasoning": "no score"}', "11"):
        with pytest.raises(ParseError):
            parse_vie(reply)


def test_imgedit_lines_average_as_step1() -> None:
    reply = ("Brief reasoning: No fur change; wrong subject.\nPrompt Compliance: 1\nVisual Seamlessness: 4\n"
             "Physical & Detail Fidelity: 4")
    scores = parse_imgedit_lines(reply)
    assert scores == [1.0, 4.0, 4.0]
    assert evaluate("round(mean(rubric), 2)", {"rubric": scores}) == 3.0
    with pytest.raises(ParseError):
        parse_imgedit_lines("Prompt Compliance: high")


def test_kris_parsers_json_then_patterns() -> None:
    assert parse_kris('text {"reasoning": "same", "consistency_score": 4} more', keys=["consistency_score"]) == [4.0]
    assert parse_kris("consistency score: 2", keys=["consistency_score"]) == [2.0]
    assert parse_kris("I would give it 3/5.", keys=["quality_score"]) == [3.0]
    assert parse_kris("overall a 5 here", keys=["quality_score"]) == [5.0]          # the scripts' bare-digit rule
    with pytest.raises(ParseError):
        parse_kris("overall a 5 here", keys=["quality_score"], bare_digit=False)
    assert parse_kris_dual('{"instruction_score": 4, "knowledge_score": 2}') == [4.0, 2.0]
    assert parse_kris_dual("instruction_score: 5\nknowledge_score: 1") == [5.0, 1.0]
    with pytest.raises(ParseError):
        parse_kris_dual("instruction_score: 5 only")


def test_rise_final_score_and_editlab_integers() -> None:
    assert parse_rise_final_score("Reasoning...\n**Final Score**: 4") == [4.0]
    assert parse_rise_final_score("Final Scores: 1, 0") == [1.0, 0.0]
    assert parse_rise_final_score("... formatted:\n\n**Final Score:** **4**") == [4.0]      # the prompts' format
    with pytest.raises(ParseError):
        parse_rise_final_score("I think it is a 4")
    assert parse_integers(" 7 ", count=1, range=[0, 10]) == [7.0]
    assert parse_integers("8 6 7 5", count=4, range=[1, 10]) == [8.0, 6.0, 7.0, 5.0]
    for bad in ("7 out of 10", "12", "7 8", "", "seven"):
        with pytest.raises(ParseError):
            parse_integers(bad, count=1, range=[0, 10])


def test_expressions_compute_the_protocol_formulas_and_nothing_else() -> None:
    env = {"sc": [8.0, 2.0], "pq": [9.0, 8.0]}
    assert evaluate("sqrt(min(sc) * min(pq))", env) == pytest.approx(4.0)   # GEdit: O = sqrt(SC * PQ)
    rise = {"rise_rea": 1.0, "rise_raw": 1.6}
    assert evaluate("max(1, rise_raw * 0.5) if rise_rea == 1 else rise_raw", rise) == 1.0
    assert evaluate("x if c else y", {"c": True, "x": 1}) == 1            # the branch not taken is not read
    for bad in ("__import__('os')", "sc.__class__", "[x for x in sc]", "open('f')"):
        with pytest.raises((ValueError, KeyError)):
            evaluate(bad, env)


# --------------------------------------------------------------------------------------------------------
# Prompt sources
# --------------------------------------------------------------------------------------------------------
def test_prompt_files_are_parsed_never_run_and_hashes_are_checked(tmp_path: Path, capsys) -> None:
    code = b'_a = """rule one"""\nb = "two"\nimport os\nos.system("exit 3")\nc = 3\n'
    assert extract_prompts("python_strings", code) == {"_a": "rule one", "b": "two"}
    folder = tmp_path / "vie_gedit"
    assert prepare("vie_gedit", tmp_path, offline=True) == 2
    assert SOURCES["vie_gedit"].url in capsys.readouterr().out
    folder.mkdir()
    (folder / "vie_prompts.py").write_bytes(code)
    assert prepare("vie_gedit", tmp_path, offline=True) == 1            # not the pinned file
    assert "expected 010234af" in capsys.readouterr().out
    digest = hashlib.sha256(code).hexdigest()
    assert prepare("vie_gedit", tmp_path, offline=True, sha256=digest) == 0
    assert json.loads((folder / "editlab_prompts.json").read_text()) == {"_a": "rule one", "b": "two"}
    # on the command line a protocol is `judge/<name>`: `kris`, `rise` and `imgedit` also name datasets
    from editlab.datasets.prepare import main as prepare_main

    assert prepare_main(["judge/rise", "--root", str(tmp_path), "--offline"]) == 2
    assert SOURCES["rise"].url in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs" / "metrics" / "judge").glob("*.yaml")))
def test_every_judge_protocol_config_builds_or_says_how_to_prepare(name: str, tmp_path: Path) -> None:
    from editlab.bench.runner import build_metrics, describe_metric

    cfg = compose_cfg([f"metrics=judge/{name}", f"results_dir={tmp_path}"])
    metrics, skipped = build_metrics(cfg.metrics)
    if skipped:
        assert f"editlab data prepare judge/{name}" in next(iter(skipped.values()))
        return
    (metric,) = metrics
    defs = describe_metric(metric)
    assert list(defs) == metric.columns() and all(c.endswith("[qwen2.5-vl-7b-instruct]") for c in defs)


def test_a_prepared_file_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    """A prompt folder whose file is not the one editlab pins (here a stand-in with the same variable names) does not
    build: the metric is skipped with the hash problem, nothing is judged with the wrong prompts."""
    from editlab.bench.runner import build_metrics
    from editlab.metrics.judge.sources import write_prepared

    names = {"vie_gedit": ["_context_no_delimit", "_prompts_0shot_two_image_edit_rule", "_prompts_0shot_tie_rule_SC",
                           "_prompts_0shot_rule_PQ"]}
    code = "".join(f'{k} = """{k} text <instruction>"""\n' for k in names["vie_gedit"]).encode()
    write_prepared("vie_gedit", tmp_path / "vie_gedit", code, "test stand-in")
    (tmp_path / "vie_gedit" / "editlab_manifest.json").write_text(json.dumps(
        json.loads((tmp_path / "vie_gedit" / "editlab_manifest.json").read_text())
        | {"sha256": hashlib.sha256(code).hexdigest()}))
    cfg = compose_cfg(["metrics=judge/vie_gedit", f"results_dir={tmp_path}",
                       f"metrics.vie_gedit.prompt_root={tmp_path}"])
    metrics, skipped = build_metrics(cfg.metrics)
    assert not metrics and "SHA-256" in skipped["vie_gedit"]


def test_unprepared_protocol_is_skipped_with_the_prepare_command(tmp_path: Path) -> None:
    from editlab.bench.runner import build_metrics

    cfg = compose_cfg(["metrics=judge/vie_gedit", f"results_dir={tmp_path}",
                       f"metrics.vie_gedit.prompt_root={tmp_path / 'none'}"])
    metrics, skipped = build_metrics(cfg.metrics)
    assert metrics == [] and "editlab data prepare judge/vie_gedit" in skipped["vie_gedit"]


# --------------------------------------------------------------------------------------------------------
# The client: back-off on 5xx / 429, a clear error naming the URL, no secret anywhere
# --------------------------------------------------------------------------------------------------------
class _Flaky(BaseHTTPRequestHandler):
    """Answers 503, then 429, then a chat completion (a stand-in for an overloaded server, for the retry logic)."""

    calls: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"auth": self.headers.get("Authorization"), "body": body})
        n = len(type(self).calls)
        if n < 3:
            self.send_response(503 if n == 1 else 429)
            self.end_headers()
            return
        out = json.dumps({"model": "served-x", "choices": [{"message": {"content": "7"}, "finish_reason": "stop"}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *args) -> None:
        pass


def test_client_retries_with_backoff_and_sends_the_key_only_in_the_header(monkeypatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("EDITLAB_TEST_KEY", "sk-secret-123")
        client = JudgeClient(f"http://127.0.0.1:{server.server_port}/v1", "m", api_key_env="EDITLAB_TEST_KEY",
                             max_retries=3, backoff_s=0.01)
        reply = client.chat([{"type": "text", "text": "hi"}], {"temperature": 0.0, "seed": 1, "top_p": None})
        assert (reply.text, reply.served_model, reply.attempts) == ("7", "served-x", 3)
        assert _Flaky.calls[0]["auth"] == "Bearer sk-secret-123"
        assert "top_p" not in _Flaky.calls[0]["body"] and _Flaky.calls[0]["body"]["seed"] == 1
        assert "sk-secret" not in json.dumps(client.describe())
    finally:
        server.shutdown()


def test_no_server_gives_an_error_naming_the_url() -> None:
    from editlab.metrics.judge.local_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    client = JudgeClient(url, "m", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(JudgeServerError, match=f"{url}/chat/completions: no server answers"):
        client.chat([{"type": "text", "text": "hi"}], {})


# --------------------------------------------------------------------------------------------------------
# End to end through a real server
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    pytest.importorskip("fastapi")
    from editlab.metrics.judge.local_server import LocalServer
    from editlab.models.toy_vlm import build_toy_vlm

    folder = build_toy_vlm(tmp_path_factory.mktemp("toy_vlm") / "toy-vlm")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with LocalServer(folder, log_path=log) as server:
        yield server, folder


def _judge_overrides(server, folder, results: Path, *extra: str) -> list[str]:
    return ["backbone=toy", "backbone.num_inference_steps=2", "dataset=shapesworld", "dataset.limit=6",
            "method=sdedit", "metrics=judge_shapesworld", f"results_dir={results}", "device=cpu",
            f"judge.base_url={server.base_url}", f"judge.model={folder}", "judge.concurrency=4",
            # sampling (the toy's greedy answer is always the same token) and a one-token answer
            "metrics.editlab_judge.decoding.temperature=1.0", "metrics.editlab_judge.decoding.max_tokens=1",
            *extra]


@pytest.mark.slow
def test_judge_end_to_end_through_transformers_serve(toy_server, tmp_path: Path) -> None:
    from editlab.bench.runner import run
    from editlab.bench.tables import load_runs
    from editlab.reports.judges import oracle_agreement, reliability

    server, folder = toy_server
    cfg = compose_cfg(_judge_overrides(server, folder, tmp_path / "res"))
    out = run(cfg, show_table=False)
    records = [json.loads(line) for line in (out.run_dir / "samples.jsonl").read_text().splitlines()]
    cols = ["judge_acc[toy-vlm]", "judge_pres[toy-vlm]", "judge_qual[toy-vlm]", "judge_overall[toy-vlm]"]
    values, failures = [], 0
    for rec in records:
        payload = rec["judgements"]["editlab[toy-vlm]"]
        for q in payload["queries"].values():
            assert 1 <= len(q["attempts"]) <= 3                       # judge.parse_retries=2 re-asks at most
            assert all(a["served_model"] == str(folder) for a in q["attempts"])
            assert [a["seed"] for a in q["attempts"]] == list(range(len(q["attempts"])))
            assert all("reply" in a for a in q["attempts"])
            if q["values"] is None:                                   # never a number in place of a failure
                assert all("parse_error" in a for a in q["attempts"]) and len(q["attempts"]) == 3
        for c in cols:
            v = rec["metrics"][c]
            if v is None:
                failures += 1
                assert "no parseable reply in 3 attempt(s)" in rec["metric_errors"][c]
            else:
                assert 0.0 <= v <= 1.0
                values.append(v)
    assert values and failures, "a random toy judge should give both parsed and unparseable replies"
    definitions = out.results["metric_definitions"]
    d = definitions["judge_acc[toy-vlm]"]
    assert d["judge"]["model"] == str(folder) and d["protocol"]["prompt_hashes"]
    assert d["this_run"]["calls"] > 0 and d["this_run"]["served_models"] == [str(folder)]
    assert "judge_acc[toy-vlm]" in out.results["metrics"]
    cache_files = sorted((tmp_path / "res" / "_cache" / "judge").rglob("*.json"))
    assert len(cache_files) == d["this_run"]["calls"]

    # the same judge at another address: every record is re-scored, from the cache, with no request sent
    moved = server.base_url.replace("127.0.0.1", "localhost")
    rerun = run(compose_cfg(_judge_overrides(server, folder, tmp_path / "res", f"judge.base_url={moved}")),
                show_table=False)
    d2 = rerun.results["metric_definitions"]["judge_acc[toy-vlm]"]
    assert d2["this_run"]["calls"] == 0 and d2["this_run"]["cache_hits"] == d["this_run"]["calls"]
    again = [json.loads(line) for line in (rerun.run_dir / "samples.jsonl").read_text().splitlines()]
    assert [r["metrics"][cols[0]] for r in again] == [r["metrics"][cols[0]] for r in records]

    runs = load_runs([out.run_dir])
    rel = reliability(runs)
    assert rel.iloc[0]["samples judged"] == len(records) and rel.iloc[0]["unparseable replies"] > 0
    agree = oracle_agreement(runs)
    assert set(agree["judge column"]) == set(cols) and len(agree) == 2 * len(cols)     # x edit_acc, preservation
    assert set(agree["truth"]) == {"oracle edit_acc (edit_acc)", "oracle preservation (preservation)"}
    with_pairs = agree[agree["pairs"] > 0]
    assert ((with_pairs["pairwise_accuracy"] >= 0) & (with_pairs["pairwise_accuracy"] <= 1)).all()
    _human_agreement_and_report(runs, rerun.run_dir, tmp_path)


def _human_agreement_and_report(runs, run_dir: Path, tmp_path: Path) -> None:
    """Likert ratings that equal the judge's accuracy column agree with it perfectly; the report writes judges.md and
    a pilot report whose saving names its acceptance source."""
    from editlab.reports import ReportOptions, render_report
    from editlab.reports.human import export_rating_page
    from editlab.reports.judges import human_agreement

    paths = export_rating_page(runs, tmp_path / "human", "likert", max_items=50)
    key = json.loads(paths["key"].read_text())
    values = {r["id"]: r["metrics"]["judge_acc[toy-vlm]"] for r in runs[0].records}
    ratings = [{"item": item, "accuracy": 10 * values[k["sample_id"]], "preservation": 5, "quality": 5}
               for item, k in key["items"].items() if values.get(k["sample_id"]) is not None]
    rating_file = tmp_path / "human" / "ratings_ann.json"
    rating_file.write_text(json.dumps({"page_id": key["page_id"], "mode": "likert", "rater": "ann",
                                       "ratings": ratings}))
    human = human_agreement(runs, [rating_file], paths["key"])
    row = human[(human["judge column"] == "judge_acc[toy-vlm]") & (human["truth"].str.startswith("human accuracy"))]
    if row.iloc[0]["n"] >= 3 and np.isfinite(row.iloc[0]["spearman"]):
        assert row.iloc[0]["spearman"] == pytest.approx(1.0) and row.iloc[0]["pairwise_accuracy"] == 1.0
    out = render_report([run_dir], tmp_path / "report", ReportOptions(
        plots=False, gallery=False, manual_minutes=5.0, review_minutes=0.5, accept="human>=5",
        ratings=[rating_file], rating_key=paths["key"]))
    judges_md = (tmp_path / "report" / "judges.md").read_text()
    assert "## Agreement with the ShapesWorld oracle" in judges_md and "## Agreement with human ratings" in judges_md
    pilot = (tmp_path / "report" / "pilot.md").read_text()
    assert "Acceptance source: human rating (mean overall of raters) >= 5" in pilot
    assert "min saved / edit (95% CI)" in pilot and out["files"]["judges"]


def test_judge_failures_when_the_server_is_gone_are_recorded_not_scored(tmp_path: Path) -> None:
    from editlab.bench.runner import run
    from editlab.metrics.judge.local_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = compose_cfg(["backbone=toy", "backbone.num_inference_steps=2", "dataset=shapesworld", "dataset.limit=2",
                       "method=sdedit", "metrics=judge/editlab", f"results_dir={tmp_path}", "device=cpu",
                       f"judge.base_url={url}", "judge.model=some/judge-model", "judge.max_retries=0",
                       "judge.timeout_s=2"])
    out = run(cfg, show_table=False)
    for line in (out.run_dir / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["metrics"]["judge_acc[judge-model]"] is None
        assert url in rec["metric_errors"]["judge_acc[judge-model]"]
        assert rec["metrics_retry"] is True                       # the next run asks again (the server may be up)
    again = run(cfg, show_table=False)
    assert again.results["timing"]["samples_scored_this_run"] == 2


def test_agreement_statistics_against_known_orderings() -> None:
    from editlab.reports.judges import agreement, pairwise_accuracy

    truth = np.array([0, 0, 1, 1, 1.0])
    assert pairwise_accuracy(np.array([1, 2, 3, 4, 5.0]), truth) == (1.0, 6)
    assert pairwise_accuracy(np.array([5, 4, 3, 2, 1.0]), truth) == (0.0, 6)
    assert pairwise_accuracy(np.array([1, 1, 1, 1, 1.0]), truth) == (0.5, 6)   # ties: half
    a = agreement(np.array([1, 2, 3, 4, 5.0]), np.array([2, 4, 6, 8, 10.0]))
    assert a["spearman"] == pytest.approx(1.0) and a["kendall"] == pytest.approx(1.0)


def test_acceptance_weighted_saving() -> None:
    from editlab.reports.pilot import parse_accept, saving_with_ci

    mean, lo, hi = saving_with_ci([True, False, True, True], manual_minutes=10, review_minutes=1, compute_minutes=0.5)
    assert mean == pytest.approx(10 * 0.75 - 1 - 0.5) and lo <= mean <= hi
    assert parse_accept("metric:judge_overall[x]>=0.7") == {"kind": "metric", "column": "judge_overall[x]",
                                                           "threshold": 0.7, "label": "judge_overall[x] >= 0.7"}
    with pytest.raises(ValueError):
        parse_accept("everything")


def test_judge_batch_fields_from_the_runner(tmp_path: Path) -> None:
    """The runner gives metrics the instruction, task type and the dataset's source image at its own size."""
    from editlab.bench.runner import build, metric_batches, run

    cfg = compose_cfg(["backbone=toy", "backbone.num_inference_steps=2", "dataset=shapesworld", "dataset.limit=2",
                       "method=sdedit", "metrics=none", f"results_dir={tmp_path}", "device=cpu"])
    out = run(cfg, show_table=False)
    records = [json.loads(line) for line in (out.run_dir / "samples.jsonl").read_text().splitlines()]
    (_, batch), = list(metric_batches(build(cfg.dataset), out.run_dir, records, 8))
    assert isinstance(batch, EditBatch) and batch.instructions == [r["instruction"] for r in records]
    assert batch.task_types == [r["task_type"] for r in records] and len(batch.source_images) == 2
    assert isinstance(batch.edited, torch.Tensor)


def test_gedit_aggregate_is_the_mean_of_task_group_means_with_the_intersection_subset() -> None:
    """calculate_statistics.py: per group mean of the per-sample values, overall = mean of the group means; the same
    on the intersection subset; per instruction language."""
    from types import SimpleNamespace

    from editlab.reports.judges import protocol_aggregates

    spec = {"group_by": "group", "overall": "mean_of_groups", "subsets": {"intersection": "intersection"},
            "split_by": "language"}
    col = "vie_o[j]"
    definitions = {col: {"judge_metric": "vie_gedit[j]", "protocol": {"aggregate": spec}, "aspect": "overall"}}
    rows = [("a", 2.0, True), ("a", 4.0, False), ("b", 9.0, True)]
    records = [{"id": f"s{i}", "status": "ok", "metrics": {col: v},
                "judgements": {"vie_gedit[j]": {"fields": {"group": g, "intersection": x, "language": "en"}}}}
               for i, (g, v, x) in enumerate(rows)]
    run = SimpleNamespace(label="m", records=records, definitions=lambda: definitions)
    agg = protocol_aggregates([run]).set_index("subset")
    assert agg.loc["all", "overall"] == pytest.approx((3.0 + 9.0) / 2)       # not the sample mean 5.0
    assert agg.loc["all", "group=a"] == pytest.approx(3.0)
    assert agg.loc["intersection", "overall"] == pytest.approx((2.0 + 9.0) / 2)
    assert agg.loc["all", "split"] == "en"
