"""Retrieval and answer metrics over the public JSON contract.

A retrieved passage is a hit for a gold entry when its source equals the gold
source and its text contains the gold evidence once all whitespace is removed.

A cited passage is *acceptable* (right to cite) when it is a gold hit, when the question
lists its (source, section) under ``acceptable``, or when it is a project guide section
(kind ``howto``) whose 依据 names a gold article: a guide step resting on the right statute
is on the matter by construction. The answer metrics built on it:

- citation_precision: acceptable citations / all citations, over answered answerable questions;
- first_line_hit: the first [n] of the answer (the 要点) cites an acceptable passage, over
  all answerable questions (a false refusal is a miss);
- next_step_presence: answers to questions with ``asks_steps`` that have a 怎么做 list of cited steps;
- near_domain_refusal: near-domain unanswerable questions (category not_covered) that are
  refused or whose answer opens with "资料中没有关于『…』的规定";
- refusal_unanswerable counts the same two outcomes over all unanswerable questions
  (refused_flag_unanswerable counts only ``refused: true``).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from statistics import median

from rag.retrieve import cited_articles, short_title

_WS = re.compile(r"\s+")
_MARKER = re.compile(r"\[(\d+)\]")
GAP_OPENING = "资料中没有关于"
STEPS_HEADER = "怎么做："


def squash(text: str) -> str:
    return _WS.sub("", text or "")


def matches(passage: dict, gold: dict) -> bool:
    return passage.get("source") == gold["source"] and squash(gold["evidence"]) in squash(passage.get("text", ""))


def first_hit_rank(retrieved: list[dict], gold: list[dict], depth: int = 10) -> int | None:
    for rank, p in enumerate(retrieved[:depth], 1):
        if any(matches(p, g) for g in gold):
            return rank
    return None


def ndcg_at(retrieved: list[dict], gold: list[dict], k: int = 10) -> float:
    """Binary gains; each gold entry can be credited once, so duplicates of one passage don't inflate it."""
    credited: set[int] = set()
    dcg = 0.0
    for rank, p in enumerate(retrieved[:k], 1):
        new = [i for i, g in enumerate(gold) if i not in credited and matches(p, g)]
        if new:
            credited.add(new[0])
            dcg += 1.0 / math.log2(rank + 1)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(gold), k) + 1))
    return dcg / ideal if ideal else 0.0


@lru_cache(maxsize=64)
def _corpus_file(corpus_dir: str, source: str):
    from .check_questions import FRONT_MATTER, CorpusFile

    path = Path(corpus_dir) / source
    if not path.is_file():
        return None, ""
    import yaml

    m = FRONT_MATTER.match(path.read_text(encoding="utf-8-sig"))
    meta = (yaml.safe_load(m.group(1)) if m else None) or {}
    return CorpusFile(path), short_title(str(meta.get("title", "")))


def gold_articles(question: dict, corpus_dir: Path | None) -> set[tuple[str, str]]:
    """(short law title, 第N条) of every gold passage, read from the corpus."""
    out: set[tuple[str, str]] = set()
    if corpus_dir is None:
        return out
    for g in question.get("gold", []):
        cf, title = _corpus_file(str(corpus_dir), g["source"])
        if cf is None:
            continue
        for passage in cf.passages_containing(g["evidence"]):
            out.add((title, passage.heading.lstrip("#").strip()))
    return out


def guide_cites(passage: dict, articles: set[tuple[str, str]]) -> bool:
    if passage.get("kind") != "howto" or not articles:
        return False
    return any(ref in articles for ref in cited_articles(passage.get("text", "")))


def acceptable(passage: dict, question: dict, articles: set[tuple[str, str]]) -> bool:
    if any(matches(passage, g) for g in question.get("gold", [])):
        return True
    if any(passage.get("source") == a["source"] and passage.get("section") == a["section"]
           for a in question.get("acceptable", [])):
        return True
    return guide_cites(passage, articles)


def first_citation(answer: dict) -> dict | None:
    m = _MARKER.search(answer.get("answer") or "")
    if not m:
        return None
    n = int(m.group(1))
    return next((c for c in answer.get("citations", []) if c.get("n") == n), None)


def has_steps(answer: dict) -> bool:
    text = answer.get("answer") or ""
    if STEPS_HEADER not in text:
        return False
    after = text.split(STEPS_HEADER, 1)[1]
    return any(_MARKER.search(line) for line in after.splitlines() if re.match(r"\s*\d+[.、]", line))


def declines(answer: dict) -> bool:
    return bool(answer.get("refused")) or (answer.get("answer") or "").startswith(GAP_OPENING)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    idx = min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))
    return v[idx]


def score(questions: list[dict], results: dict, ks=(1, 3, 5, 10), corpus_dir: Path | None = None) -> dict:
    """``results`` maps question id to the JSON-contract answer (or None when a system has no answer step).

    ``corpus_dir`` lets guide sections that cite a gold article count as acceptable citations.
    """
    answerable = [q for q in questions if q["answerable"]]
    unanswerable = [q for q in questions if not q["answerable"]]
    ranks = {q["id"]: first_hit_rank(results[q["id"]]["retrieved"], q["gold"]) for q in answerable}
    out: dict = {}
    for k in ks:
        out[f"recall@{k}"] = sum(1 for r in ranks.values() if r and r <= k) / max(1, len(answerable))
    out["mrr@10"] = sum(1 / r for r in ranks.values() if r) / max(1, len(answerable))
    out["ndcg@10"] = sum(ndcg_at(results[q["id"]]["retrieved"], q["gold"]) for q in answerable) / max(1, len(answerable))

    has_answers = all("answer" in results[q["id"]] for q in questions)
    if has_answers:
        cited, covered, false_ref = 0, 0, 0
        for q in answerable:
            r = results[q["id"]]
            if r["refused"]:
                false_ref += 1
                continue
            if any(matches(c, g) for c in r["citations"] for g in q["gold"]):
                cited += 1
            if all(f in r["answer"] for f in q["facts"]):
                covered += 1
        out["citation_hit"] = cited / max(1, len(answerable))
        out["fact_coverage"] = covered / max(1, len(answerable))
        out["false_refusal"] = false_ref / max(1, len(answerable))
        # The other side of the gap notice: answerable questions that open with "资料中没有关于『…』" (not refused,
        # but told the sources lack something they have). Kept apart so that a notice said too often shows.
        out["gap_on_answerable"] = sum(1 for q in answerable if not results[q["id"]]["refused"]
                                       and declines(results[q["id"]])) / max(1, len(answerable))
        out["refusal_unanswerable"] = sum(1 for q in unanswerable if declines(results[q["id"]])) / max(1, len(unanswerable))
        out["refused_flag_unanswerable"] = sum(1 for q in unanswerable if results[q["id"]]["refused"]) / max(1, len(unanswerable))
        near = [q for q in unanswerable if q.get("category") == "not_covered"]
        out["near_domain_refusal"] = sum(1 for q in near if declines(results[q["id"]])) / len(near) if near else None
        good = total = first = 0
        for q in answerable:
            r = results[q["id"]]
            articles = gold_articles(q, corpus_dir)
            if not r["refused"]:
                ok = [acceptable(c, q, articles) for c in r["citations"]]
                good += sum(ok)
                total += len(ok)
            lead = first_citation(r)
            first += bool(not r["refused"] and lead and acceptable(lead, q, articles))
        out["citation_precision"] = good / total if total else None
        out["first_line_hit"] = first / max(1, len(answerable))
        steps = [q for q in answerable if q.get("asks_steps")]
        out["next_step_presence"] = (sum(1 for q in steps if has_steps(results[q["id"]])) / len(steps)) if steps else None
        out["citations_in_retrieved"] = all(
            any(c["source"] == p["source"] and c["start"] == p["start"] for p in results[q["id"]]["retrieved"])
            for q in questions for c in results[q["id"]]["citations"])
    lat = [results[q["id"]].get("timings_ms", {}).get("total") for q in questions]
    lat = [x for x in lat if x is not None]
    out["latency_p50_ms"] = median(lat) if lat else float("nan")
    out["latency_p95_ms"] = percentile(lat, 95)

    def group_recall(field: str) -> dict:
        groups: dict[str, list[int | None]] = {}
        for q in answerable:
            groups.setdefault(q.get(field, "?"), []).append(ranks[q["id"]])
        return {g: (sum(1 for r in rs if r and r <= 5) / len(rs), len(rs)) for g, rs in sorted(groups.items())}

    out["by_style"] = group_recall("style")
    out["by_category"] = group_recall("category")
    out["misses"] = [q["id"] for q in answerable if not ranks[q["id"]] or ranks[q["id"]] > 5]
    return out
