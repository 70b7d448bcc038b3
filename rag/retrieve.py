"""Hybrid retrieval: dense (FAISS) and BM25 keyword lists, fused by reciprocal rank.

Why RRF: cosine scores and BM25 scores live on unrelated scales that shift
with query length; ranks fuse robustly without per-query calibration.
Dense search runs over passages *and* their typical questions; a chunk scores
the best of its vectors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .chunking import Chunk
from .config import Settings
from .index import LoadedIndex
from .keyword import tokenize
from .lexicon import expand_query

_CLAUSE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]?")
QUESTION_GAP = 0.04  # typical-question cosines run this much above passage cosines
CONFIDENCE_MID = 0.895  # raw similarity that maps to confidence 0.5
_ASKING = re.compile(r"吗|呢|么|怎么|怎样|如何|能不能|可不可以|可以|是否|有没有|谁|哪|多少|几|[?？]")


@dataclass
class Hit:
    chunk: Chunk
    score: float
    dense: float = 0.0
    keyword: float = 0.0
    rank: int = 0
    question: float = 0.0  # cosine of the chunk's best typical question (0 when it has none)

    @property
    def closeness(self) -> float:
        """How close the chunk is to the question by meaning: the better of passage and typical-question cosine."""
        return max(self.dense, self.question - QUESTION_GAP)


@dataclass
class Retrieval:
    hits: list[Hit]
    confidence: float  # 0..1, how sure we are that the top passages are about the question
    query_tokens: list[str]


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, ties by index: the same as ``argsort(-s, stable)[:k]``.

    argpartition + sorting only k items keeps this O(n) instead of O(n log n), which
    is most of the retrieval time at a million chunks (eval/bench.py).
    """
    n = len(scores)
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        kth = np.partition(-scores, k - 1)[k - 1]  # the k-th largest score, negated
        idx = np.flatnonzero(-scores <= kth)  # everything tied with it is kept, then ranked
    else:
        idx = np.arange(n)
    return idx[np.lexsort((idx, -scores[idx]))][:k]


def focus_question(question: str, min_len: int = 60) -> str | None:
    """The asking part of a long story ("……结果到手就碎了。商家不认，我该怎么办？").

    Shoppers bury the question in the last clauses; embedding the whole story
    dilutes it with irrelevant detail. Returns None for short questions.
    """
    if len(question) < min_len:
        return None
    clauses = [c.strip() for c in _CLAUSE.findall(question) if c.strip()]
    asking = [i for i, c in enumerate(clauses) if _ASKING.search(c)]
    if not asking:
        return None
    last = asking[-1]
    start = max(0, last - 1)
    return "".join(clauses[start:last + 1])


_REFERENCE = re.compile(r"《([^》]+)》((?:第[一二三四五六七八九十百千零〇]+条[、和及]?)+)")
_ARTICLE = re.compile(r"第[一二三四五六七八九十百千零〇]+条")
FOLLOW_SHARE = 0.95  # an article a top guide section rests on scores this share of the section's score
FOLLOW_FROM = 3  # only guide sections ranked this high pass their score on


def short_title(title: str) -> str:
    """《消费者权益保护法》 for 中华人民共和国消费者权益保护法; 《民法典》 for the Civil Code excerpts."""
    return title.removeprefix("中华人民共和国").split("（节选）")[0]


def cited_articles(text: str) -> list[tuple[str, str]]:
    """(short law title, 第N条) in order of citation, e.g. from "（依据：《电子商务法》第二十条、第五十一条）"."""
    out = []
    for name, arts in _REFERENCE.findall(text):
        out += [(short_title(name), a) for a in _ARTICLE.findall(arts) if (short_title(name), a) not in out]
    return out


def guide_basis(chunks: list[Chunk]) -> dict[int, list[int]]:
    """For each project guide section: the chunks of the articles its opening (answering) sentence cites.

    Why: a guide section that answers the question names the statute it rests on; that
    article is the 依据 the answer owes, even when the shopper's words don't match its text.
    """
    where: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(chunks):
        if c.kind == "law" and c.section.startswith("第"):
            where.setdefault((short_title(c.title), c.section), []).append(i)
    out: dict[int, list[int]] = {}
    for i, c in enumerate(chunks):
        if c.kind == "howto":
            opening = c.text.split("。", 1)[0]
            targets = [j for ref in cited_articles(opening) for j in where.get(ref, [])]
            if targets:
                out[i] = targets
    return out


class Retriever:
    def __init__(self, index: LoadedIndex, embedder, settings: Settings):
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.basis = guide_basis(index.chunks)

    def query_vector(self, question: str, direct: bool = False) -> np.ndarray:
        """``direct``: one encoder call of its own now, not through the micro-batching queue
        (``rag ask --batch`` computes vectors ahead on worker threads this way: the same numbers
        as a question asked alone, see rag/pipeline.py ``ask_batch``)."""
        return self.query_vectors([question], direct=direct)[0]

    def query_vectors(self, questions: list[str], direct: bool = False) -> np.ndarray:
        """One vector per question, all encoded in one call (the encoder groups texts of unlike length,
        so a story's short focus is not padded to the story's length: rag/onnx_encoder.py)."""
        focus = [focus_question(q) for q in questions]
        texts = list(questions) + [f for f in focus if f is not None]
        vecs = self.embedder.encode_queries(texts, direct=True) if direct else self.embedder.encode_queries(texts)
        out, j = vecs[: len(questions)].copy(), len(questions)
        for i, f in enumerate(focus):
            if f is not None:
                v = out[i] + vecs[j]
                out[i], j = v / np.linalg.norm(v), j + 1
        return out

    def dense_scores(self, query_vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best cosine per chunk: (its passage vector, its best typical question); -1 = not in the candidates."""
        return self.index.dense_search(query_vector, max(self.settings.candidates * 4, 200))

    def retrieve(self, question: str, k: int | None = None, mode: str | None = None,
                 query_vector: np.ndarray | None = None) -> Retrieval:
        s = self.settings
        k = k or s.top_k
        mode = mode or s.mode
        n = len(self.index.chunks)
        expanded = expand_query(question) if s.expand_query else question
        asked, added = tokenize(question), tokenize(expanded[len(question):])
        tokens = asked + added
        if mode == "hybrid" and getattr(self.index, "engine_search", None) is not None:
            # The store fuses dense + BM25 itself (Milvus hybrid_search + RRFRanker); what it cannot express
            # (best-of passage/question per chunk, the expansion weight) is in engine_search, the guide
            # passing below in _finish, on the engine's candidates (rag/milvus_store.py).
            if query_vector is None:
                query_vector = self.query_vector(question)
            fused, dense, dense_q, keyword = self.index.engine_search(
                query_vector, question, expanded[len(question):], s)
            return self._finish(fused, dense, dense_q, keyword, tokens, k, mode, self.index.keyword_index(True))
        dense = np.full(n, -1.0, dtype=np.float32)
        dense_q = np.full(n, -1.0, dtype=np.float32)
        if mode in ("hybrid", "dense"):
            if query_vector is None:
                query_vector = self.query_vector(question)
            dense, dense_q = self.dense_scores(query_vector)
            if not s.typical_questions:
                dense_q[:] = -1.0
        kw_index = self.index.keyword_index(s.typical_questions)
        keyword = np.zeros(n, np.float32)
        if mode in ("hybrid", "keyword"):
            # The shopper's own words count fully, the lexicon's legal terms as hints: otherwise a few generic
            # expansions (商家 → 经营者 销售者, 淘宝 → 电子商务平台经营者) outvote the distinctive words asked.
            keyword = kw_index.scores(asked)
            if added and s.expansion_weight:
                keyword = keyword + np.float32(s.expansion_weight) * kw_index.scores(added)

        cand = min(s.candidates, n)
        fused = np.zeros(n, dtype=np.float64)
        if mode in ("hybrid", "dense"):
            if s.tq_fusion == "max":
                lists = [(np.maximum(dense, dense_q), s.dense_weight)]
            else:  # passages and typical questions as two separate ranked lists
                lists = [(dense, s.dense_weight), (dense_q, s.question_weight)]
            for scores, weight in lists:
                for r, i in enumerate(top_indices(scores, cand)):
                    if scores[i] > -1:
                        fused[i] += weight / (s.rrf_k + r + 1)
        if mode in ("hybrid", "keyword"):
            for r, i in enumerate(top_indices(keyword, cand)):
                if keyword[i] > 0:
                    fused[i] += s.keyword_weight / (s.rrf_k + r + 1)
        return self._finish(fused, dense, dense_q, keyword, tokens, k, mode, kw_index)

    def _finish(self, fused, dense, dense_q, keyword, tokens, k, mode, kw_index) -> Retrieval:
        """Guide sections pass their score to the articles they rest on; the top k become hits."""
        for i in top_indices(fused, FOLLOW_FROM):
            for j in self.basis.get(int(i), ()):
                fused[j] = max(fused[j], FOLLOW_SHARE * fused[i])
        top = [int(i) for i in top_indices(fused, k) if fused[i] > 0]
        hits = [Hit(self.index.chunks[i], float(fused[i]), float(max(dense[i], 0)), float(keyword[i]), r + 1,
                    float(max(dense_q[i], 0))) for r, i in enumerate(top)]
        return Retrieval(hits, self._confidence(dense, dense_q, keyword, tokens, top, mode, kw_index), tokens)

    def _confidence(self, dense, dense_q, keyword, tokens, top, mode, kw_index) -> float:
        """How sure we are that the corpus answers the question, on 0..1 (0.5 = the refusal line).

        The signal is the mean of the best passage cosine and the best
        typical-question cosine. On the dev set answerable questions sit at
        0.88–0.96 and unanswerable ones (recipes, stocks, a platform's
        membership perks) at 0.80–0.90; raw 0.895 maps to 0.5, the point
        where ~2 % of answerable and ~92 % of unanswerable dev questions fall
        below (see README, "Refusal threshold"). Without typical questions the
        passage cosine alone is used, shifted by their typical gap (0.04).
        """
        if not top:
            return 0.0
        if mode == "keyword":
            words = [t for t in tokens if not t.startswith("§")]
            coverage = sum(1 for t in words if t in kw_index.vocab) / len(words) if words else 0.0
            return coverage if keyword[top[0]] > 0 else 0.0
        dp = float(dense.max())
        dq = float(dense_q.max())
        if dq <= -1 or not self.settings.typical_questions:
            dq = dp + QUESTION_GAP
        if dp <= -1:
            dp = dq - QUESTION_GAP
        raw = (dp + dq) / 2
        return float(np.clip((raw - CONFIDENCE_MID) / 0.10 + 0.5, 0, 1))
