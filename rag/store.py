"""The storage seam: what building and retrieval need from wherever a knowledge base is kept.

Two implementations:

- ``faiss`` (default, ``rag/index.py``): versioned folders of files (FAISS, BM25, chunks) under
  ``--index``; one machine, nothing to run.
- ``milvus`` (``rag/milvus_store.py``): one Milvus collection per knowledge base, reached by
  ``RAG_MILVUS_URI`` (a local ``*.db`` file = Milvus Lite, in-process; ``http://host:19530`` =
  standalone or cluster, shared by several ``rag serve`` replicas).

Why a seam and not a flag inside the index code: the FAISS files and Milvus differ in how a
version is committed (a folder + CURRENT rename vs. an alias switch), in where fusion happens
(numpy here vs. the engine's ``hybrid_search``) and in what a row is; retrieval
(``rag/retrieve.py``) and the pipeline only need the small surface below.

A **store** (one knowledge base)::

    kind                      "faiss" | "milvus"
    current() -> str | None   the serving version (CURRENT / the alias's collection), None = no index
    manifest() -> dict | None the serving version's manifest (documents, chunks, model), without loading it
    build(...) -> BuildReport collect, embed what is new, write a new version, switch to it
    open(model_id) -> view    load the serving version for queries
    stats() -> dict           documents, chunks, rows, version, where it lives

A **view** (one loaded version; ``LoadedIndex`` for FAISS, ``MilvusView`` for Milvus)::

    version, manifest, chunks           fetch chunks by position: chunks[i], fetch([i, j])
    dense_search(qvec, depth)           best passage cosine and best typical-question cosine per chunk
    keyword_search(tokens, questions)   BM25 per chunk (over text, or text + typical questions)
    vocab                               words the keyword index knows (rag/gaps.py)
    stats()
    engine_search(...) (Milvus only)    dense + BM25 fused by the engine (RRFRanker); see retrieve.py

Writing by chunk id (upsert / delete of rows keyed by content hash) is the Milvus store's own
business inside ``build``: a FAISS version is written whole (its unchanged vectors are reused),
a Milvus collection is synchronised row by row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

import json
import sys

from .config import Settings
from .index import BuildReport, IndexError_, build_faiss_index, current_version, load_index, progress_bar

STORES = ("faiss", "milvus")


class StoreView(Protocol):
    version: str
    manifest: dict
    chunks: list

    def fetch(self, ids) -> list: ...

    def dense_search(self, query_vector: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]: ...

    def keyword_search(self, tokens: list[str], typical_questions: bool = True) -> np.ndarray: ...

    @property
    def vocab(self): ...

    def stats(self) -> dict: ...


class Store(Protocol):
    kind: str

    def current(self) -> str | None: ...

    def build(self, embedder=None, progress=None, strict: bool = False, wait: bool = False): ...

    def open(self, model_id: str | None = None) -> StoreView: ...

    def stats(self) -> dict: ...

    def manifest(self) -> dict | None: ...


def store_kind(settings: Settings) -> str:
    kind = (settings.store or "faiss").strip().lower()
    if kind not in STORES:
        raise IndexError_(f"未知的索引存储 RAG_STORE={settings.store!r}：可选 faiss（本地文件，默认）或 milvus")
    return kind


class FaissStore:
    """The files in ``--index`` (rag/index.py), unchanged: this class only names them as a store."""

    kind = "faiss"

    def __init__(self, settings: Settings):
        self.settings = settings

    def current(self) -> str | None:
        path = current_version(self.settings.index_dir)
        return path.name if path is not None and path.is_dir() else None

    def current_path(self) -> Path | None:
        return current_version(self.settings.index_dir)

    def build(self, embedder=None, progress=None, strict: bool = False, wait: bool = False):
        return build_faiss_index(self.settings, embedder=embedder, progress=progress, strict=strict, wait=wait)

    def open(self, model_id: str | None = None):
        return load_index(self.settings, model_id=model_id)

    def manifest(self) -> dict | None:
        """The serving version's manifest, read without loading the index (None: none, or unreadable)."""
        path = self.current_path()
        if path is None:
            return None
        try:
            m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) else None

    def stats(self) -> dict:
        path = self.current_path()
        out = {"store": "faiss", "where": str(self.settings.index_dir), "version": path.name if path else None}
        if path is not None:
            try:
                m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
                out.update(documents=len(m.get("documents", {})), chunks=m.get("chunks"), rows=m.get("entries"))
            except (OSError, ValueError):
                pass
        return out


def get_store(settings: Settings) -> Store:
    if store_kind(settings) == "milvus":
        from .milvus_store import MilvusStore

        return MilvusStore(settings)
    return FaissStore(settings)


def build_index(settings: Settings, embedder=None, progress=None, strict: bool = False,
                wait: bool = False) -> BuildReport:
    """Build a new index version and switch to it, in the store ``settings.store`` names.
    ``progress(done, total)`` reports embedding. Lives here, not in rag/index.py, so that the
    FAISS files module never needs to know that other stores exist (no import cycle)."""
    return get_store(settings).build(embedder=embedder, progress=progress, strict=strict, wait=wait)


def ensure_index(settings: Settings) -> BuildReport | None:
    """Build the index when there is none (or its CURRENT is unreadable), so that `make run`,
    `rag serve` and `rag eval` work on a fresh clone. Says so on stderr; returns the report."""
    if get_store(settings).current() is not None:
        return None
    print(f"还没有索引，正在从 {settings.corpus_dir} 建立（首次约需一两分钟）…", file=sys.stderr)
    report = build_index(settings, progress=progress_bar("计算向量"), wait=True)
    print(report.summary(), file=sys.stderr)
    return report
