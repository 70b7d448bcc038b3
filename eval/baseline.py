"""The plain pipeline every change is compared against.

LangChain RecursiveCharacterTextSplitter (500 chars, 50 overlap) over each
document body, the same embedding model, a flat FAISS inner-product index,
dense retrieval only. This is what a generic RAG platform does out of the box.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.config import Settings
from rag.documents import discover, load_document


def plain_embedder(settings: Settings):
    """The plain pipeline runs the model the usual way: sentence-transformers on torch."""
    from rag.embedding import get_embedder

    return get_embedder(settings.with_(encoder="torch"))


class PlainPipeline:
    def __init__(self, settings: Settings, embedder, chunk_size: int = 500, overlap: int = 50):
        import faiss

        self.embedder = embedder
        splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=overlap, add_start_index=True)
        self.passages: list[dict] = []
        for path in discover(settings.corpus_dir):
            doc = load_document(path, settings.corpus_dir)
            body = doc.text[doc.body_start:]
            for piece in splitter.create_documents([body]):
                start = doc.body_start + piece.metadata["start_index"]
                self.passages.append({"source": doc.source, "title": doc.title, "kind": doc.kind,
                                      "section": "", "text": piece.page_content,
                                      "start": start, "end": start + len(piece.page_content)})
        texts = [p["text"] for p in self.passages]
        key = hashlib.sha1(("\x00".join(texts) + embedder.model_id).encode()).hexdigest()[:16]
        cache = Path(settings.cache_dir) / "baseline" / f"{key}.npy"
        t0 = time.perf_counter()
        if cache.exists():
            vecs = np.load(cache)
        else:
            vecs = embedder.encode_passages(texts)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, vecs)
        self.build_seconds = time.perf_counter() - t0
        self.index = faiss.IndexFlatIP(vecs.shape[1])
        self.index.add(vecs)

    def ask(self, question: str, k: int = 10, qid=None) -> dict:
        t0 = time.perf_counter()
        q = self.embedder.encode_queries([question])
        scores, ids = self.index.search(q, k)
        retrieved = [dict(self.passages[i], n=r + 1, score=float(s))
                     for r, (s, i) in enumerate(zip(scores[0], ids[0])) if i >= 0]
        return {"id": qid, "question": question, "retrieved": retrieved,
                "timings_ms": {"total": (time.perf_counter() - t0) * 1000}}

    def ask_batch(self, questions: list[str], k: int = 10, batch_size: int = 32) -> list[dict]:
        """The plain pipeline in bulk, as a generic platform batches: queries embedded in batches of
        ``batch_size`` (sentence-transformers on torch), one FAISS search for all."""
        t0 = time.perf_counter()
        model = getattr(self.embedder, "model", None)
        if model is not None:  # torch: sentence-transformers batches internally
            vecs = model.encode([self.embedder.query_prefix + q for q in questions], batch_size=batch_size,
                                normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        else:
            vecs = np.concatenate([self.embedder.encode_queries(questions[i:i + batch_size])
                                   for i in range(0, len(questions), batch_size)])
        scores, ids = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), k)
        ms = (time.perf_counter() - t0) * 1000 / max(1, len(questions))
        return [{"id": None, "question": q, "timings_ms": {"total": ms},
                 "retrieved": [dict(self.passages[i], n=r + 1, score=float(s))
                               for r, (s, i) in enumerate(zip(scores[j], ids[j])) if i >= 0]}
                for j, q in enumerate(questions)]
