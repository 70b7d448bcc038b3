"""Retrieval testing (命中测试): why a passage ranked where it did, for any configuration the evaluation knows.

For one question and one configuration (``eval.run.CONFIGS``: mode, query
expansion, typical questions, how question vectors are fused; plus mode and k)
this gives the dense list (best of passage and typical-question cosine), the
keyword list (BM25 over the words asked, plus the lexicon's terms at their
weight), the fused (reciprocal-rank) list the answer is built from, which
typical question matched each passage, the confidence against the refusal
threshold, and the answer the Assistant would give with that configuration.

Why through the Assistant's own objects: the test must show exactly what a
shopper would get, so it uses the serving index, the Assistant's embedder and
``Retriever`` with the configuration's settings, and asks a copy of the
Assistant that differs only in those settings.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .labels import BODY_SECTION

DEFAULT_CONFIG = "hybrid+lexicon+tq (default)"
SHOWN = 10


def configs() -> dict[str, dict]:
    """The evaluation's configurations that run on the serving index (the plain baseline builds its
    own index with another splitter and the torch model, so it is not offered here)."""
    try:
        from eval.run import CONFIGS
    except Exception:  # the eval package is not installed with the app: the default only
        return {DEFAULT_CONFIG: {}}
    return {name: dict(o) for name, o in CONFIGS.items() if o is not None}


@dataclass
class Row:
    chunk: int  # index into index.chunks
    source: str
    title: str
    section: str
    kind: str
    text: str
    fused_rank: int | None = None
    fused: float = 0.0
    dense_rank: int | None = None
    dense: float | None = None  # passage cosine
    question_cos: float | None = None  # best typical-question cosine
    matched_question: str | None = None
    keyword_rank: int | None = None
    keyword: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return self.source, self.section or BODY_SECTION


@dataclass
class Explanation:
    question: str
    config: str
    overrides: dict
    mode: str
    k: int
    tokens: list[str]
    confidence: float
    threshold: float
    refused: bool
    fused: list[Row]
    dense: list[Row]
    keyword: list[Row]
    result: dict  # the answer, in the `rag ask --json` shape
    timings_ms: dict = field(default_factory=dict)


class HitTester:
    """Keeps one Retriever per (index version, configuration) and the typical-question rows per chunk."""

    def __init__(self, assistant):
        self.assistant = assistant
        self._lock = threading.Lock()
        self._retrievers: dict[tuple, object] = {}
        self._qrows: tuple[str, dict[int, np.ndarray]] | None = None

    def settings_for(self, config: str, mode: str | None = None):
        known = configs()
        if config not in known:
            raise ValueError(f"没有这个检索配置：{config}")
        s = self.assistant.settings.with_(**known[config])
        if mode:
            if mode not in ("hybrid", "dense", "keyword"):
                raise ValueError(f"检索方式只能是 hybrid、dense 或 keyword：{mode}")
            s = s.with_(mode=mode)
        return s

    def _retriever(self, index, settings):
        from .retrieve import Retriever

        key = (index.version, settings)
        with self._lock:
            r = self._retrievers.get(key)
            if r is None:
                if len(self._retrievers) > 16:
                    self._retrievers.clear()
                r = self._retrievers[key] = Retriever(index, self.assistant.embedder, settings)
        return r

    def _question_rows(self, index) -> dict[int, np.ndarray]:
        """chunk -> rows of its typical-question vectors (in the order of chunk.meta['questions'])."""
        if self._qrows is not None and self._qrows[0] == index.version:
            return self._qrows[1]
        rows: dict[int, list[int]] = {}
        owners = getattr(index, "owners", None)
        n = len(index.chunks)
        if owners is not None:
            for row in range(n, len(owners)):
                rows.setdefault(int(owners[row]), []).append(row)
        out = {c: np.asarray(r) for c, r in rows.items()}
        self._qrows = (index.version, out)
        return out

    def matched_question(self, index, chunk: int, qvec) -> tuple[str | None, float | None]:
        """The chunk's typical question closest to the query vector, and its cosine."""
        questions = index.chunks[chunk].meta.get("questions") or []
        if not questions or qvec is None:
            return None, None
        rows = self._question_rows(index).get(chunk)
        vectors = getattr(index, "vectors", None)
        if rows is not None and vectors is not None and len(rows) == len(questions):
            sims = np.asarray(vectors[rows], dtype=np.float32) @ np.asarray(qvec, dtype=np.float32)
        else:  # a store without the vectors in memory: embed this chunk's questions now
            sims = self.assistant.embedder.encode_questions(questions) @ np.asarray(qvec, dtype=np.float32)
        best = int(np.argmax(sims))
        return questions[best], float(sims[best])

    def explain(self, question: str, config: str = DEFAULT_CONFIG, mode: str | None = None,
                k: int | None = None) -> Explanation:
        from .lexicon import expand_query
        from .keyword import tokenize
        from .pipeline import validate_question

        t0 = time.perf_counter()
        a = self.assistant
        q = validate_question(question, a.settings.max_question_chars)
        a.reload()
        index = a.index
        s = self.settings_for(config, mode)
        k = int(k or s.top_k)
        retriever = self._retriever(index, s)
        n = len(index.chunks)
        qvec = None if s.mode == "keyword" else retriever.query_vector(q)
        t1 = time.perf_counter()
        retrieval = retriever.retrieve(q, k=max(k, SHOWN), mode=s.mode, query_vector=qvec)
        t2 = time.perf_counter()

        # The two lists before fusion, as retrieve() builds them.
        dense_list = np.full(n, -1.0, dtype=np.float32)
        passage = question_cos = None
        if qvec is not None:
            passage, question_cos = retriever.dense_scores(qvec)
            if not s.typical_questions:
                question_cos = np.full(n, -1.0, dtype=np.float32)
            dense_list = np.maximum(passage, question_cos) if s.tq_fusion == "max" else passage
        keyword = np.zeros(n, dtype=np.float32)
        if s.mode in ("hybrid", "keyword"):
            expanded = expand_query(q) if s.expand_query else q
            asked, added = tokenize(q), tokenize(expanded[len(q):])
            kw_index = (index.keyword_index(s.typical_questions) if hasattr(index, "keyword_index")
                        else (index.keyword_q if s.typical_questions else index.keyword))
            keyword = kw_index.scores(asked)
            if added and s.expansion_weight:
                keyword = keyword + np.float32(s.expansion_weight) * kw_index.scores(added)
        dense_order = [int(i) for i in np.lexsort((np.arange(n), -dense_list)) if dense_list[i] > -1] if qvec is not None else []
        keyword_order = [int(i) for i in np.lexsort((np.arange(n), -keyword)) if keyword[i] > 0]
        dense_rank = {i: r + 1 for r, i in enumerate(dense_order)}
        keyword_rank = {i: r + 1 for r, i in enumerate(keyword_order)}
        position = {id(c): i for i, c in enumerate(index.chunks)}
        fused_rank: dict[int, tuple[int, float]] = {}
        for h in retrieval.hits:
            fused_rank[position[id(h.chunk)]] = (h.rank, h.score)

        def row(i: int) -> Row:
            c = index.chunks[i]
            r = Row(i, c.source, c.title, c.section or BODY_SECTION, c.kind, c.text)
            if i in fused_rank:
                r.fused_rank, r.fused = fused_rank[i]
            r.dense_rank, r.keyword_rank = dense_rank.get(i), keyword_rank.get(i)
            if passage is not None and passage[i] > -1:
                r.dense = float(passage[i])
            r.keyword = float(keyword[i])
            if qvec is not None and s.typical_questions:
                r.matched_question, r.question_cos = self.matched_question(index, i, qvec)
            return r

        fused_rows = [row(position[id(h.chunk)]) for h in retrieval.hits[:SHOWN]]
        dense_rows = [row(i) for i in dense_order[:SHOWN]]
        keyword_rows = [row(i) for i in keyword_order[:SHOWN]]
        t3 = time.perf_counter()
        result = self.answer(q, s, index, k)
        t4 = time.perf_counter()
        return Explanation(
            question=q, config=config, overrides=configs()[config], mode=s.mode, k=k, tokens=retrieval.query_tokens,
            confidence=float(retrieval.confidence), threshold=float(s.refuse_below), refused=bool(result.get("refused")),
            fused=fused_rows, dense=dense_rows, keyword=keyword_rows, result=result,
            timings_ms={"embed": round((t1 - t0) * 1000, 1), "retrieve": round((t2 - t1) * 1000, 1),
                        "explain": round((t3 - t2) * 1000, 1), "answer": round((t4 - t3) * 1000, 1)})

    def answer(self, q: str, settings, index, k: int) -> dict:
        """What the Assistant answers with ``settings``: a copy of it that differs only in them."""
        a = self.assistant
        if settings == a.settings:
            return a.ask(q, k=k, mode=settings.mode)
        clone = copy.copy(a)
        clone.settings = settings
        clone._retriever = self._retriever(index, settings)
        return clone.ask(q, k=k, mode=settings.mode)


def search_passages(index, text: str, limit: int = 20) -> list[tuple[str, str, str, str]]:
    """(source, section, title, kind) of the article/sections matching ``text``: its words (BM25 over the
    passage text) and plain substring matches in title, section or path; one entry per section."""
    from .keyword import tokenize

    text = (text or "").strip()
    if not text:
        return []
    seen: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    low = text.lower()
    for c in index.chunks:
        if low in f"{c.title} {c.section} {c.source}".lower():
            seen.setdefault((c.source, c.section or BODY_SECTION), (c.source, c.section or BODY_SECTION, c.title, c.kind))
            if len(seen) >= limit:
                return list(seen.values())
    kw = index.keyword_index(False) if hasattr(index, "keyword_index") else index.keyword
    scores = kw.scores(tokenize(text))
    for i in np.argsort(-scores, kind="stable")[: limit * 3]:
        if scores[i] <= 0 or len(seen) >= limit:
            break
        c = index.chunks[int(i)]
        seen.setdefault((c.source, c.section or BODY_SECTION), (c.source, c.section or BODY_SECTION, c.title, c.kind))
    return list(seen.values())
