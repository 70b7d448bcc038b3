"""A persistent embedding cache shared by every index built with the same model.

Why: the index folder already reuses the serving version's vectors, but a new
index folder (a second knowledge base, a test run, a rebuild after the index
was deleted) would re-embed everything: minutes on a 2-core CPU. Vectors are
keyed by model id + text hash, so they can never be mixed up across models.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np


class EmbeddingCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, dim INTEGER, data BLOB)")

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, data FROM vec WHERE key IN ({','.join('?' * len(part))})", part).fetchall()
            for key, data in rows:
                out[key] = np.frombuffer(data, dtype=np.float32)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vec (key, dim, data) VALUES (?, ?, ?)",
                [(k, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])

    def close(self) -> None:
        self._db.close()


def open_cache(settings) -> EmbeddingCache | None:
    """None when the cache can't be opened (read-only home, locked file): caching is an optimisation only."""
    try:
        return EmbeddingCache(settings.embedding_cache or Path(settings.cache_dir) / "embeddings.sqlite3")
    except sqlite3.Error:
        return None
