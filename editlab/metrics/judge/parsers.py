"""Reply parsers of the judge protocols. Each turns a judge's raw reply into a list of numbers, or raises
:class:`ParseError` with what was wrong. None of them ever guesses a number.

Each official parser follows its benchmark's scoring script, minus the guess:

- ``vie``: GEdit-Bench's ``viescore/utils.py: mllm_output_to_dict`` (stepfun-ai/Step1X-Edit): the JSON between two
  ``||V^=^V||`` delimiters, else the outermost ``{...}``, else a bare ``[a, b]`` list, else a bare integer 0-10, and
  the ``fix_json`` repair of unquoted keys; the ``score`` list is returned. Where the official code gives up it
  substitutes ``random.randint(0, 10)``; here the reply is a parse failure.
- ``imgedit_lines``: ImgEdit's ``Benchmark/Basic/step1_get_avgscore.py`` (PKU-YuanGroup/ImgEdit): every line
  ``<name>: <digits>``; no such line is a failure (the official script drops the sample silently).
- ``kris``: KRIS-Bench's ``metrics_common.py`` / ``metrics_knowledge.py`` (mercurystraw/Kris_Bench): for each key,
  the first ``{...}`` block containing the key parsed as JSON, else ``<key>: n``, ``n/5``, ``n out of 5`` and
  (``bare_digit: true``, as in the single-score scripts) the first stand-alone digit 1-5.
- ``rise_final_score``: RISEBench's ``gpt_eval.py: extract`` (PhoenixZ810/RISEBench): the integers after
  ``Final Score:`` (or ``Final Scores:``).
- ``integers``: editlab's own strict format: the whole reply is exactly ``count`` integers in ``range``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any


class ParseError(ValueError):
    """A reply that does not contain the scores the protocol asks for."""


# --------------------------------------------------------------------------------------------------------
# GEdit-Bench / VIEScore
# --------------------------------------------------------------------------------------------------------
_VIE_DELIMITER = "||V^=^V||"


def _quote_keys(text: str) -> str:
    """The repair GEdit's ``fix_json`` applies: quote bare keys, wrap bare numbers in a list, quote other values."""
    fixed = re.sub(r"(\w+):", r'"\1":', text)

    def value(match: re.Match[str]) -> str:
        key, val, end = match.groups()
        val = val.strip()
        if re.match(r"^-?\d+(\.\d+)?$", val):
            val = f"[{val}]"
        elif not re.match(r"^(true|false|null)$", val, re.IGNORECASE):
            val = f'"{val}"'
        return f"{key}: {val}{end}"

    return re.sub(r'(".*?"):(.*?)(,|})', value, fixed)


def parse_vie(text: str, **_: Any) -> list[float]:
    if text.count(_VIE_DELIMITER) == 2:
        start, end = text.find(_VIE_DELIMITER) + len(_VIE_DELIMITER), text.rfind(_VIE_DELIMITER)
        body = text[start:end]
    else:
        start, end = text.find("{"), text.rfind("}") + 1
        if start == -1 or end == 0:
            lo, hi = text.find("["), text.rfind("]") + 1
            if re.match(r"^\[\d+, ?\d+\]$", text[lo:hi]):
                return [float(v) for v in json.loads(text[lo:hi])]
            if re.fullmatch(r"\s*-?\d+\s*", text) and 0 <= int(text) <= 10:
                return [float(int(text))]
            raise ParseError("no JSON object, score list or bare score 0-10 in the reply")
        body = text[start:end]
    body = body.strip().replace("\n", "")
    if not body:
        raise ParseError("empty JSON between the delimiters")
    try:
        data = json.loads(body)
    except ValueError:
        try:
            data = json.loads(_quote_keys(body))
        except ValueError as err:
            raise ParseError(f"JSON that cannot be read even after key quoting: {err}") from err
    if not isinstance(data, dict) or "score" not in data:
        raise ParseError("the JSON has no 'score'")
    scores = data["score"] if isinstance(data["score"], list) else [data["score"]]
    try:
        out = [float(s) for s in scores]
    except (TypeError, ValueError) as err:
        raise ParseError(f"'score' holds something that is not a number: {scores!r}") from err
    if not out:
        raise ParseError("'score' is an empty list")
    return out


# --------------------------------------------------------------------------------------------------------
# ImgEdit
# --------------------------------------------------------------------------------------------------------
def parse_imgedit_lines(text: str, **_: Any) -> list[float]:
    scores = []
    for line in text.splitlines():
        parts = line.strip().split(": ")
        if len(parts) == 2 and parts[1].isdigit():
            scores.append(float(int(parts[1])))
    if not scores:
        raise ParseError("no '<criterion>: <integer>' line in the reply")
    return scores


# --------------------------------------------------------------------------------------------------------
# KRIS-Bench
# --------------------------------------------------------------------------------------------------------
def _kris_one(text: str, key: str, bare_digit: bool) -> float:
    block = re.search(r"\{[^{}]*" + re.escape(key) + r"[^{}]*\}", text, re.DOTALL)
    if block:
        try:
            value = json.loads(block.group(0)).get(key)
            if value is not None:
                return float(int(value))
        except (ValueError, TypeError, AttributeError):
            pass
    stem = key.replace("_score", "")
    patterns = [rf"{stem}[_\s]*score\s*[:：]?\s*([1-5])", r"([1-5])\s*/\s*5", r"([1-5])\s+out\s+of\s+5"]
    if bare_digit:
        patterns.append(r"\b([1-5])\b")
    for pattern in patterns:
        m = re.search(pattern, text, re.IGNORECASE | re.DOTALL)
        if m:
            return float(int(m.group(1)))
    raise ParseError(f"no {key} in the reply")


def parse_kris(text: str, keys: list[str] | None = None, bare_digit: bool = True, **_: Any) -> list[float]:
    if not keys:
        raise ValueError("the kris parser needs 'keys'")
    return [_kris_one(text, k, bare_digit) for k in keys]


def parse_kris_dual(text: str, **_: Any) -> list[float]:
    """``metrics_knowledge.py: extract_dual_scores``: JSON with instruction_score and knowledge_score, else
    ``instruction_score: n`` / ``knowledge_score: n``; both must be found."""
    block = re.search(r"\{[^{}]*instruction_score[^{}]*\}", text, re.DOTALL)
    if block:
        try:
            data = json.loads(block.group(0))
            ins, kno = data.get("instruction_score"), data.get("knowledge_score")
            if ins is not None and kno is not None:
                return [float(int(ins)), float(int(kno))]
        except (ValueError, TypeError, AttributeError):
            pass
    found = []
    for name in ("instruction", "knowledge"):
        m = re.search(rf"{name}[_\s]*score\s*[:：]\s*([1-5])", text, re.IGNORECASE)
        if not m:
            raise ParseError(f"no {name}_score in the reply")
        found.append(float(int(m.group(1))))
    return found


# --------------------------------------------------------------------------------------------------------
# RISEBench
# --------------------------------------------------------------------------------------------------------
def parse_rise_final_score(text: str, **_: Any) -> list[float]:
    for label in ("Final Score", "Final Scores"):
        for match in re.findall(rf"\*?\*?{label}\*?\*?:?\s*([\d*\s,\n]*)", text, re.IGNORECASE):
            numbers = re.findall(r"\d+", match.replace("\n", " "))
            if numbers:
                return [float(int(n)) for n in numbers]
    raise ParseError("no 'Final Score:' followed by numbers in the reply")


# --------------------------------------------------------------------------------------------------------
# editlab
# --------------------------------------------------------------------------------------------------------
def parse_integers(text: str, count: int = 1, range: list[float] | None = None, **_: Any) -> list[float]:  # noqa: A002
    pattern = r"\s*" + r"\s*[,;]?\s*".join([r"(-?\d+)"] * int(count)) + r"\s*\.?\s*"
    m = re.fullmatch(pattern, text)
    if not m:
        raise ParseError(f"the reply is not exactly {count} integer(s): {text[:80]!r}")
    values = [float(int(v)) for v in m.groups()]
    if range is not None and not all(range[0] <= v <= range[1] for v in values):
        raise ParseError(f"score(s) {values} outside {range[0]:g}-{range[1]:g}")
    return values


PARSERS: dict[str, Callable[..., list[float]]] = {
    "vie": parse_vie,
    "imgedit_lines": parse_imgedit_lines,
    "kris": parse_kris,
    "kris_dual": parse_kris_dual,
    "rise_final_score": parse_rise_final_score,
    "integers": parse_integers,
}


def get_parser(name: str) -> Callable[..., list[float]]:
    if name not in PARSERS:
        raise KeyError(f"unknown judge reply parser '{name}', available: {', '.join(sorted(PARSERS))}")
    return PARSERS[name]
