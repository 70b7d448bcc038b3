"""👍/👎 feedback from the web app, kept in a small SQLite file beside the index.

Why SQLite: the web app may record from several worker threads at once and a
maintainer wants to export everything later (``rag feedback export``); SQLite
gives atomic appends and needs no server. The file lives in the index folder
(``feedback.sqlite3``) so each knowledge base keeps its own feedback; index
rebuilds only touch ``v-*`` version folders and never remove it.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

from .config import Settings

DB_NAME = "feedback.sqlite3"
RATINGS = ("up", "down")
COLUMNS = ("id", "created", "rating", "question", "answer", "comment", "citations", "index_version")
NO_FEEDBACK = "还没有收到任何反馈。"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    citations TEXT NOT NULL DEFAULT '[]',
    index_version TEXT
)
"""


def db_path(settings: Settings) -> Path:
    return Path(settings.index_dir) / DB_NAME


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10)
    conn.execute(_SCHEMA)
    return conn


def _citation_summary(citations) -> list[dict]:
    """Keep what identifies a source (not the passage text, which the index already has)."""
    out = []
    for c in citations or []:
        if isinstance(c, dict):
            out.append({k: c.get(k) for k in ("n", "source", "title", "section", "kind") if k in c})
        else:
            out.append({"source": str(c)})
    return out


def record(settings: Settings, question: str, answer: str, citations, rating: str, comment: str = "",
           index_version: str | None = None) -> int:
    """Store one rating; returns its row id. ``rating`` is "up" or "down"."""
    if rating not in RATINGS:
        raise ValueError(f"rating must be one of {RATINGS}, got {rating!r}")
    path = db_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO feedback (created, rating, question, answer, comment, citations, index_version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.strftime("%Y-%m-%dT%H:%M:%S"), rating, question or "", answer or "", comment or "",
                 json.dumps(_citation_summary(citations), ensure_ascii=False), index_version),
            )
            return int(cur.lastrowid)
    finally:
        conn.close()


def rows(settings: Settings) -> list[dict]:
    path = db_path(settings)
    if not path.exists():
        return []
    conn = _connect(path)
    try:
        cur = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY id")
        out = [dict(zip(COLUMNS, r)) for r in cur.fetchall()]
    finally:
        conn.close()
    for r in out:
        try:
            r["citations"] = json.loads(r["citations"])
        except ValueError:
            pass
    return out


def export(settings: Settings, fmt: str = "jsonl") -> str:
    """All feedback as JSON lines or CSV text; a short Chinese note when there is none."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r} (jsonl or csv)")
    data = rows(settings)
    if not data:
        return NO_FEEDBACK
    if fmt == "jsonl":
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in data)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in data:
        w.writerow([json.dumps(r[c], ensure_ascii=False) if c == "citations" else r[c] for c in COLUMNS])
    return buf.getvalue().rstrip("\n")
