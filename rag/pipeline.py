"""The assistant: question in, answer + citations out, in the public JSON shape.

Why one class: the CLI, the batch mode, the web app and the evaluation all ask
questions the same way, and serving must pick up a rebuilt index without a
restart, which needs one place that owns the loaded index.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time

from .answer import Answer, compose
from .config import Settings
from .gaps import gaps
from .index import LoadedIndex
from .retrieve import Hit, Retriever


class QuestionError(ValueError):
    """A question that can't be answered as given (empty, too long); message in Chinese."""


def passage_json(n: int, hit: Hit) -> dict:
    c = hit.chunk
    return {"n": n, "source": c.source, "title": c.title, "kind": c.kind, "section": c.section,
            "text": c.text, "start": c.start, "end": c.end, "score": round(hit.score, 6)}


def validate_question(question: str, max_chars: int) -> str:
    q = (question or "").strip()
    if not q:
        raise QuestionError("问题不能为空，请输入您想咨询的售后问题。")
    if len(q) > max_chars:
        raise QuestionError(f"问题太长了（{len(q)} 字），请精简到 {max_chars} 字以内。")
    return q


def known_words(index: LoadedIndex) -> set[str]:
    """Words the sources or the shoppers' lexicon know: a name outside them is a gap (rag/gaps.py)."""
    from .lexicon import load_lexicon

    return set(index.vocab) | {key.lower() for key, _ in load_lexicon()}


class Assistant:
    def __init__(self, settings: Settings | None = None, embedder=None, llm=None):
        """``llm``: an rag.llm.LLMConfig; by default read from RAG_LLM_* environment variables (None = off)."""
        self.settings = settings or Settings()
        if llm is None:
            from .llm import LLMConfig

            llm = LLMConfig.from_env()
        self.llm = llm
        from .store import get_store

        self.store = get_store(self.settings)  # FAISS files or Milvus (rag/store.py)
        if self.store.current() is None:  # say so before spending seconds on the model
            self.store.open()
        if embedder is None:
            from .embedding import get_embedder

            embedder = get_embedder(self.settings)
        self.embedder = embedder
        self._lock = threading.Lock()
        self._index: LoadedIndex | None = None
        self._retriever: Retriever | None = None
        self.reload()

    @property
    def index(self) -> LoadedIndex:
        return self._index

    def reload(self, force: bool = False) -> bool:
        """Switch to the newest index version if CURRENT (FAISS) or the alias (Milvus) moved; returns True when it switched."""
        want = self.store.current()
        if not force and self._index is not None and want == self._index.version:
            return False
        with self._lock:
            if not force and self._index is not None and want == self._index.version:
                return False
            index = self.store.open(model_id=self.embedder.model_id)
            self._index, self._retriever = index, Retriever(index, self.embedder, self.settings)
            self._known_words = known_words(index)
        return True

    def ask(self, question: str, k: int | None = None, mode: str | None = None, qid=None,
            use_llm: bool = False, on_token=None, history: list | None = None, query_vector=None) -> dict:
        """Answer one question. ``use_llm`` lets the configured LLM write the answer (verified
        against the passages; the extractive answer is the fallback); ``on_token`` streams it.
        ``history`` (the earlier turns of a conversation, ``[{"role", "content"}, …]`` or strings
        for earlier questions): a follow-up that lacks its subject is retrieved with the earlier
        questions, or rewritten by the LLM when ``use_llm`` (rag/conversation.py); the result then
        also has ``follow_up`` and ``rewritten_question``. ``query_vector``: the question's
        embedding when already computed (``ask_batch``)."""
        t0 = time.perf_counter()
        q = validate_question(question, self.settings.max_question_chars)
        try:
            self.reload()
        except Exception:
            if self._index is None:
                raise  # nothing to fall back on; a broken new version keeps the old one serving
        retriever = self._retriever
        k = k or self.settings.top_k
        t1 = time.perf_counter()
        turn = self._turn(q, history, retriever, max(k, 10), mode, use_llm, query_vector) if history else None
        asked = q if turn is None else turn.query  # what is retrieved and answered: the turn, or the turn in context
        if turn is not None and turn.retrieval is not None:
            retrieval, t2 = turn.retrieval, t1 + turn.embed_ms / 1000
        else:
            if query_vector is None or asked != q:
                query_vector = None if (mode or self.settings.mode) == "keyword" else retriever.query_vector(asked)
            t2 = time.perf_counter()
            retrieval = retriever.retrieve(asked, k=max(k, 10), mode=mode, query_vector=query_vector)
        t3 = time.perf_counter()
        answer_hits = dataclasses.replace(retrieval, hits=retrieval.hits[:k])
        uncovered = gaps(q, self._known_words)
        answer: Answer = compose(asked, retrieval, self.settings.refuse_below, self.settings.max_answer_sentences,
                                 uncovered=uncovered, k=k)
        t4 = time.perf_counter()
        text = answer.text
        citations = [dict(passage_json(c.n, c.hit), used_sentences=[[s.start, s.end] for s in c.sentences])
                     for c in answer.citations]
        llm_info = None
        if use_llm and self.llm is not None and not answer.refused:  # a refusal never reaches the LLM
            from .llm import answer_with_llm

            hits = answer_hits.hits
            config = self.llm if on_token is None or self.llm.stream else dataclasses.replace(self.llm, stream=True)
            res = answer_with_llm(asked, hits, answer, config, on_token=on_token)
            llm_info = res["llm"]
            if llm_info["used"]:
                text = res["answer"]
                citations = [passage_json(n, hits[n - 1]) for n in res["cited"]]
            elif llm_info.get("notice"):
                text = f"（{llm_info['notice']}）\n{text}"
        t5 = time.perf_counter()
        result = {
            "id": qid,
            "question": question,
            "answer": text,
            "refused": answer.refused,
            "citations": citations,
            "retrieved": [passage_json(i + 1, h) for i, h in enumerate(retrieval.hits[:10])],
            "confidence": round(retrieval.confidence, 4),
            "sections": answer.sections,
            "index_version": self._index.version,
            "timings_ms": {"embed": round((t2 - t1) * 1000, 2), "retrieve": round((t3 - t2) * 1000, 2),
                           "compose": round((t4 - t3) * 1000, 2), "total": round((t5 - t0) * 1000, 2)},
        }
        if history:
            result["follow_up"] = turn.as_json()
            result["rewritten_question"] = turn.rewritten
            if turn.rewrite_ms:
                result["timings_ms"]["rewrite"] = round(turn.rewrite_ms, 2)
        if use_llm:
            result["llm"] = llm_info or {"used": False, "notice": None if answer.refused else "未配置大模型"}
            if llm_info:
                result["timings_ms"]["llm"] = round((t5 - t4) * 1000, 2)
        return result

    def _turn(self, q: str, history, retriever, depth: int, mode, use_llm: bool, query_vector):
        """How this turn of a conversation is retrieved (rag/conversation.py)."""
        from .conversation import Turn, resolve_turn, rewrite_with_llm

        if use_llm and self.llm is not None:
            t = time.perf_counter()
            rewritten = rewrite_with_llm(q, history, self.llm, self.settings.max_question_chars)
            if rewritten:
                return Turn(q, rewritten, "llm", rewritten=rewritten, rewrite_ms=(time.perf_counter() - t) * 1000)
        return resolve_turn(q, history, retriever, depth, mode, self.settings.max_question_chars, query_vector,
                            self.settings.refuse_below)

    def ask_batch(self, items, k: int | None = None, mode: str | None = None, use_llm: bool = False,
                  ahead: int = 32):
        """``rag ask --batch``: yields ``(qid, question, result)`` for each ``(qid, question)``, in order.

        The query embeddings are computed ahead on ``settings.query_workers`` threads (one per core),
        each question in an encoder call of its own on the one-thread path, while this thread
        answers the questions whose vectors are ready: encoding and answering overlap and both
        cores stay busy. Why not batches of texts: a text's vector then depends, in its last
        float bits, on the texts batched with it, and on the dev set 2 answers in 366 changed
        (the order of two tied passages, a confidence's 4th decimal); one call per question gives
        the same vectors as a question asked alone (any thread count), so each result equals
        ``ask`` one at a time, timings aside (tests/test_serving.py). Measured against encoding
        in batches in eval/reports/bench_serving.md. A question that is not valid — or given as
        a QuestionError already — yields that QuestionError as its result; the batch goes on.
        ``timings_ms["embed"]`` is the time the answer waited for its vector.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        dense = (mode or self.settings.mode) != "keyword"
        try:
            self.reload()
        except Exception:
            if self._index is None:
                raise
        retriever = self._retriever
        workers = self.settings.query_workers or min(2, os.cpu_count() or 1)
        pending: deque = deque()
        source = iter(items)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ask-batch") as pool:
            def fill() -> None:
                while len(pending) < ahead:
                    try:
                        qid, question = next(source)
                    except StopIteration:
                        return
                    if isinstance(question, QuestionError):
                        pending.append((qid, question, question, None))
                        continue
                    try:
                        q = validate_question(question, self.settings.max_question_chars)
                    except QuestionError as e:
                        pending.append((qid, question, e, None))
                        continue
                    future = pool.submit(retriever.query_vector, q, True) if dense else None
                    pending.append((qid, question, q, future))

            fill()
            while pending:
                qid, question, q, future = pending.popleft()
                fill()
                if not isinstance(q, str):
                    yield qid, question, q
                    continue
                t = time.perf_counter()
                vector = future.result() if future is not None else None
                waited = (time.perf_counter() - t) * 1000
                result = self.ask(question, k=k, mode=mode, qid=qid, use_llm=use_llm, query_vector=vector)
                result["timings_ms"]["embed"] = round(waited, 2)
                result["timings_ms"]["total"] = round(result["timings_ms"]["total"] + waited, 2)
                yield qid, question, result
