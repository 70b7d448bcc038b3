"""Retrieval and answer metrics over the public JSON contract.

A retrieved passage is a hit for a gold entry when its source equals the gold
source and its text contains the gold evidence once all whitespace is removed.
"""
from __future__ import annotations

import math
import re
from statistics import median

_WS = re.compile(r"\s+")


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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    idx = min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))
    return v[idx]


def score(questions: list[dict], results: dict, ks=(1, 3, 5, 10)) -> dict:
    """``results`` maps question id to the JSON-contract answer (or None when a system has no answer step)."""
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
        out["refusal_unanswerable"] = sum(1 for q in unanswerable if results[q["id"]]["refused"]) / max(1, len(unanswerable))
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
