"""Query expansion: shoppers' words mapped to the legal terms the statutes use.

Why: "邮费谁出" never matches 运费 by keywords, and the small embedding model
only partly bridges such gaps. The mapping lives in ``rag/data/lexicon.tsv``,
a reviewed data file (colloquial term, tab, legal terms), general across the
domain rather than tied to any one question.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

LEXICON_FILE = Path(__file__).parent / "data" / "lexicon.tsv"


def tsv_pairs(path: Path) -> list[tuple[str, str]]:
    """``key<TAB>value`` rows of a reviewed data file in rag/data/ (``#`` comments and blank lines
    skipped; a missing file is empty)."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "\t" not in line:
            continue
        key, value = line.split("\t", 1)
        rows.append((key.strip(), value.strip()))
    return rows


@lru_cache(maxsize=4)
def load_lexicon(path: Path = LEXICON_FILE) -> tuple[tuple[str, tuple[str, ...]], ...]:
    rows = [(key, tuple(t for t in terms.replace("，", ",").replace(" ", ",").split(",") if t))
            for key, terms in tsv_pairs(path)]
    # Longest keys first so "退一赔三" wins over "赔".
    return tuple(sorted(rows, key=lambda r: -len(r[0])))


def expand_query(question: str, path: Path = LEXICON_FILE) -> str:
    """The question followed by the legal terms its colloquial words stand for."""
    extra: list[str] = []
    for key, terms in load_lexicon(path):
        if key in question:
            extra.extend(t for t in terms if t not in question and t not in extra)
    return question if not extra else question + " " + " ".join(extra)
