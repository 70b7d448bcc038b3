"""What every reader of knowledge-base files shares: ``Document``, ``DocumentError``, text
decoding, the title/kind fallbacks and the law-article patterns.

Why a leaf module: ``documents`` (Markdown/text and discovery), ``formats`` (HTML, PDF,
DOCX) and ``chunking`` all need these; keeping them here, importing nothing else of the
package but ``labels``, lets each of the three import it without importing one another.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .labels import KINDS

CN_NUM = "零〇一二三四五六七八九十百千两"
# A heading that is exactly one law article: 第二十五条, 第十条之一.
ARTICLE = re.compile(rf"^第[{CN_NUM}\d]+条(?:之[{CN_NUM}\d]+)?$")
# "第X条" at the start of a line in plain text (no Markdown headings), followed by the article body.
PLAIN_ARTICLE = re.compile(rf"^[ \t\u3000]*(第[{CN_NUM}\d]+条)(?=[ \t\u3000]|$)", re.M)

UNKNOWN_ENCODING = "无法识别的文字编码（只支持 UTF-8 和 GBK/GB18030）"


class DocumentError(ValueError):
    """A file that cannot be indexed; the message names the file and says why (in Chinese)."""


@dataclass
class Document:
    source: str  # path relative to the corpus root, POSIX separators
    title: str
    kind: str  # law | howto | guide (rag/labels.py)
    text: str  # the text that chunk offsets point into
    body_start: int = 0  # offset of the body after any front matter
    meta: dict = field(default_factory=dict)
    # (level, title, start, end-of-heading-line) for formats whose headings are not Markdown
    headings: list[tuple[int, str, int, int]] | None = None

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def decode_bytes(data: bytes, name: str) -> str:
    """Decode UTF-8 (with or without BOM) or GBK/GB18030; refuse anything else."""
    if b"\x00" in data[:4096]:
        raise DocumentError(f"{name}: 看起来是二进制文件，不是文本")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        raise DocumentError(f"{name}: {UNKNOWN_ENCODING}") from None
    if not mostly_cjk_or_ascii(text):
        raise DocumentError(f"{name}: {UNKNOWN_ENCODING}")
    return text


def mostly_cjk_or_ascii(text: str) -> bool:
    sample = text[:5000]
    ok = sum(1 for c in sample if c.isascii() or "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" or "\uff00" <= c <= "\uffef")
    return ok >= 0.9 * max(1, len(sample))


def title_from_name(path: Path) -> str:
    return path.stem.replace("-", " ").replace("_", " ").strip() or path.name


def guess_kind(meta: dict, rel: str) -> str:
    """The front matter's ``kind`` when it is a known one, else by folder: ``laws/`` → law, else guide."""
    kind = str(meta.get("kind", "")).strip().lower()
    if kind in KINDS:
        return kind
    return "law" if top_folder(rel) == "laws" else "guide"


def top_folder(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else ""
