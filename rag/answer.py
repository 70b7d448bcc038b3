"""Extractive answer composition: the answer is made only of sentences from retrieved passages.

Why extractive by default: it needs no LLM, runs in microseconds, and cannot
claim anything the sources don't say. Each sentence carries the number [n] of
the passage it was copied from; laws are labelled 法律依据 and guide text
经验指南（未经核实）, since guides are third-party experience, not rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from .keyword import tokenize
from .labels import KIND_LABEL, REFUSAL, section_label
from .retrieve import Hit, Retrieval

SENTENCE_END = re.compile(r"[^。！？；!?\n]+[。！？；!?]?")


@dataclass
class Sentence:
    text: str
    start: int  # offset inside the chunk text
    end: int


@dataclass
class Citation:
    n: int
    hit: Hit
    sentences: list[Sentence] = field(default_factory=list)


@dataclass
class Answer:
    text: str
    refused: bool
    citations: list[Citation]


_ITEM = re.compile(r"^\s*(?:[（(][一二三四五六七八九十\d]+[)）]|[一二三四五六七八九十]+、|\d+[.、])")


def split_sentences(text: str) -> list[Sentence]:
    out = []
    for m in SENTENCE_END.finditer(text):
        s, e = m.start(), m.end()
        while s < e and text[s] in " \t\u3000-*#>|":
            s += 1
        if e - s >= 4:
            out.append(Sentence(text[s:e], s, e))
    return out


def answer_units(text: str, max_block: int = 320) -> list[Sentence]:
    """Sentences, except that a lead-in ending in "：" is kept together with its enumerated items.

    Why: "下列商品不适用七日无理由退货规定：" says nothing on its own; the
    answer is in the （一）（二）… items that follow it.
    """
    sents = split_sentences(text)
    units: list[Sentence] = []
    i = 0
    while i < len(sents):
        s = sents[i]
        j = i + 1
        if s.text.rstrip().endswith(("：", ":")):
            while j < len(sents) and _ITEM.match(sents[j].text) and sents[j].end - s.start <= max_block:
                j += 1
        if j > i + 1:
            units.append(Sentence(text[s.start:sents[j - 1].end], s.start, sents[j - 1].end))
        else:
            units.append(s)
        i = j
    return units


def _inline(text: str) -> str:
    """One line per citation: the line breaks of enumerations are dropped (Chinese needs no spaces)."""
    return re.sub(r"\s*\n\s*", "", text)


def _weights(tokens: list[str]) -> dict[str, float]:
    w: dict[str, float] = {}
    for t in tokens:
        w[t] = 0.4 if t.startswith("§") else 1.0 + 0.3 * min(len(t), 4)
    return w


@lru_cache(maxsize=50_000)
def _sentence_tokens(sentence: str) -> frozenset[str]:
    """Cache: the same corpus sentences come back query after query, and jieba is the composer's main cost."""
    return frozenset(tokenize(sentence))


def _overlap(sentence: str, weights: dict[str, float]) -> float:
    toks = _sentence_tokens(sentence)
    total = sum(weights.values()) or 1.0
    return sum(v for t, v in weights.items() if t in toks) / total


def source_label(hit: Hit) -> str:
    c = hit.chunk
    section = c.section if c.section != "正文" else ""
    if c.part:
        section += f"（第{c.part}段）"
    return f"《{c.title}》{section}"


WHOLE_TOP = 220  # quote the top passage whole when it is at most this long
WHOLE_OTHER = 120


def compose(question: str, retrieval: Retrieval, refuse_below: float, max_sentences: int = 4,
            max_sources: int = 3, max_chars: int = 700) -> Answer:
    hits = retrieval.hits
    if not hits or retrieval.confidence < refuse_below:
        return Answer(REFUSAL + "下面列出最接近的资料，仅供参考。", True, [])
    weights = _weights(retrieval.query_tokens)
    top = hits[0].score
    chosen = [h for h in hits[:max_sources] if h.score >= 0.75 * top] or hits[:1]
    citations: list[Citation] = []
    budget = max_chars
    for i, hit in enumerate(chosen):
        text = hit.chunk.text
        units = answer_units(text)
        if not units or budget <= 0:
            continue
        whole = WHOLE_TOP if i == 0 else WHOLE_OTHER
        if len(text) <= whole:
            picked = units
        else:
            overlap = {u.start: _overlap(u.text, weights) for u in units}
            ranked = sorted(units, key=lambda u: (overlap[u.start], -u.start), reverse=True)
            take = max_sentences - 1 if i == 0 else 1
            picked = [u for u in ranked[:take] if overlap[u.start] > 0] or [units[0]]
        picked = sorted(picked, key=lambda u: u.start)
        kept, used = [], 0
        for u in picked:
            if kept and used + len(u.text) > budget:
                break
            kept.append(u)
            used += len(u.text)
        budget -= used
        citations.append(Citation(len(citations) + 1, hit, kept))
    # Number citations in the order the answer shows them: laws first, then guides, then others.
    order = {"law": 0, "guide": 1}
    citations.sort(key=lambda c: (order.get(c.hit.chunk.kind, 2), c.n))
    for n, c in enumerate(citations, 1):
        c.n = n
    lines = []
    for kind in ("law", "guide"):
        group = [c for c in citations if c.hit.chunk.kind == kind]
        if not group:
            continue
        lines.append(f"{KIND_LABEL[kind]}：")
        for c in group:
            body = _inline("".join(s.text.strip() for s in c.sentences))
            lines.append(f"- 依{source_label(c.hit)}：{body}[{c.n}]")
    others = [c for c in citations if c.hit.chunk.kind not in KIND_LABEL]
    for c in others:
        lines.append(f"- 依{source_label(c.hit)}：{_inline(''.join(s.text.strip() for s in c.sentences))}[{c.n}]")
    return Answer("\n".join(lines), False, citations)
