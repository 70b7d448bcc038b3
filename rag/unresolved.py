"""未解决的问题: refused questions and 👎 answers from the conversation log, grouped by meaning.

Why grouped: fifty shoppers ask the same missing thing fifty ways; the list of
what the knowledge base lacks should show it once, with how often and since
when. Questions are embedded with the Assistant's own model (as queries, like
at answer time) and clustered greedily by cosine: distinct wordings in order of
frequency, each joining the closest group whose centroid is at least
``threshold`` away, else starting a new one. Groups are ordered worst first:
most occurrences, then most 👎, then most recent.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

DEFAULT_THRESHOLD = 0.92


@dataclass
class Group:
    questions: list[tuple[str, int]]  # (wording, occurrences), most frequent first
    count: int = 0
    refused: int = 0
    down: int = 0
    first: str = ""
    last: str = ""
    retrieved: list[tuple[str, str, str, int]] = field(default_factory=list)  # (source, section, title, times)
    entries: list[dict] = field(default_factory=list)  # the log rows, newest first

    @property
    def question(self) -> str:
        return self.questions[0][0]


def _norm(q: str) -> str:
    return " ".join(str(q or "").split())


class Grouper:
    """Groups log rows; keeps the vectors of wordings it has embedded (per model)."""

    def __init__(self, embedder, max_cache: int = 20000):
        self.embedder = embedder
        self.max_cache = max_cache
        self._cache: dict[str, np.ndarray] = {}

    def vectors(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            if len(self._cache) + len(todo) > self.max_cache:
                self._cache.clear()
            vecs = self.embedder.encode_questions(todo) if hasattr(self.embedder, "encode_questions") \
                else self.embedder.encode_queries(todo)
            for t, v in zip(todo, vecs):
                self._cache[t] = np.asarray(v, dtype=np.float32)
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def group(self, rows: list[dict], threshold: float = DEFAULT_THRESHOLD) -> list[Group]:
        """``rows``: conversation-log rows (refused or 👎). Returns the groups, worst first."""
        by_text: dict[str, list[dict]] = {}
        for r in rows:
            q = _norm(r.get("question"))
            if q:
                by_text.setdefault(q, []).append(r)
        texts = sorted(by_text, key=lambda t: (-len(by_text[t]), -max(float(r.get("ts") or 0) for r in by_text[t]), t))
        if not texts:
            return []
        vecs = self.vectors(texts)
        centroids: list[np.ndarray] = []
        members: list[list[int]] = []
        for i, v in enumerate(vecs):
            if centroids:
                sims = np.stack(centroids) @ v
                best = int(np.argmax(sims))
                if sims[best] >= threshold:
                    members[best].append(i)
                    c = vecs[members[best]].mean(axis=0)
                    centroids[best] = c / (np.linalg.norm(c) or 1.0)
                    continue
            centroids.append(v / (np.linalg.norm(v) or 1.0))
            members.append([i])
        groups = [self._summarise([(texts[i], by_text[texts[i]]) for i in m]) for m in members]
        groups.sort(key=lambda g: (-g.count, -g.down, -_ts(g.entries[0]) if g.entries else 0))
        return groups

    @staticmethod
    def _summarise(items: list[tuple[str, list[dict]]]) -> Group:
        entries = sorted((r for _, rs in items for r in rs), key=lambda r: -float(r.get("ts") or 0))
        seen: Counter = Counter()
        titles: dict[tuple[str, str], str] = {}
        for r in entries:
            for p in (r.get("retrieved") or [])[:3]:
                key = (p.get("source", ""), p.get("section", ""))
                seen[key] += 1
                titles.setdefault(key, p.get("title", ""))
        created = [str(r.get("created") or "") for r in entries]
        return Group(
            questions=sorted(((t, len(rs)) for t, rs in items), key=lambda x: -x[1]),
            count=len(entries), refused=sum(1 for r in entries if r.get("refused")),
            down=sum(1 for r in entries if r.get("feedback") == "down"),
            first=min(created) if created else "", last=max(created) if created else "",
            retrieved=[(s, sec, titles[(s, sec)], n) for (s, sec), n in seen.most_common(3)],
            entries=entries)


def _ts(r: dict) -> float:
    return float(r.get("ts") or 0)
