"""Chinese keyword search: jieba words + character bigrams scored with BM25 (bm25s).

Why both: jieba gives whole legal terms (七日无理由, 惩罚性赔偿) but splits a
shopper's typo or unusual compound differently from the statute; character
bigrams still match those. Stop words and punctuation are dropped so that
"的/了/吗" don't dominate short questions.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

STOPWORDS = set(
    "的 了 吗 呢 吧 啊 呀 么 是 在 和 与 或 及 等 也 就 都 而 又 还 被 把 让 给 对 向 从 到 为 以 "
    "我 你 他 她 它 我们 你们 他们 这 那 这个 那个 这样 那样 什么 怎么 怎么办 怎样 如何 哪些 哪个 "
    "可以 能 能不能 可不可以 会 要 想 请问 一下 有 没有 有没有 是不是 应该 需要 个 一个 "
    "上 下 里 中 后 前 时 时候 如果 但是 因为 所以 已经 不 没 很 太 多 该 之 其 应当 或者 "
    "规定 本法 本条 依照 有关".split()
)
_PUNCT = re.compile(r"[\s\W_]+", re.U)
_CJK = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def tokenize(text: str, mode: str = "jieba+bigram") -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()  # full-width digits (１５日) as shoppers type them (15日)
    tokens: list[str] = []
    if "jieba" in mode:
        for w in _jieba().cut_for_search(text):
            w = w.strip()
            if w and w not in STOPWORDS and not _PUNCT.fullmatch(w):
                tokens.append(w)
    if "bigram" in mode:
        for run in re.findall(r"[\u4e00-\u9fff]+", text):
            tokens.extend("§" + run[i : i + 2] for i in range(len(run) - 1))
    return tokens


class KeywordIndex:
    def __init__(self, mode: str = "jieba+bigram"):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.mode = mode
        self.bm25 = bm25s.BM25(k1=1.2, b=0.75)
        self.vocab: dict[str, int] = {}
        self.size = 0

    def build_from_tokens(self, corpus: list[list[str]]) -> "KeywordIndex":
        corpus = [toks or ["∅"] for toks in corpus]
        self.bm25.index(corpus, show_progress=False)
        self.vocab = self.bm25.vocab_dict
        self.size = len(corpus)
        return self

    def scores(self, query: str | list[str]) -> np.ndarray:
        tokens = tokenize(query, self.mode) if isinstance(query, str) else query
        known = [t for t in tokens if t in self.vocab]
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.bm25.get_scores(known), dtype=np.float32)

    def save(self, path: Path) -> None:
        self.bm25.save(str(path))

    @classmethod
    def load(cls, path: Path, mode: str, size: int) -> "KeywordIndex":
        import bm25s

        ki = cls(mode)
        ki.bm25 = bm25s.BM25.load(str(path))
        ki.vocab = ki.bm25.vocab_dict
        ki.size = size
        return ki
