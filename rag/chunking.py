"""Structure-aware chunking: one law article or one guide section per chunk.

Why: a shopper's answer is almost always one article (《消费者权益保护法》第二十五条)
or one guide section; fixed-size windows cut articles in half and mix
neighbours, which both hurts retrieval and makes citations vague. Only an
article longer than ``max_chars`` is split (with langchain's recursive
splitter), and every piece keeps its article and heading path. Offsets point
into ``Document.text`` so ``text == doc.text[start:end]`` always holds.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from langchain_text_splitters import RecursiveCharacterTextSplitter

from .docbase import ARTICLE, PLAIN_ARTICLE, Document  # noqa: F401  (ARTICLE: re-exported)
from .labels import BODY_SECTION

MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
SEPARATORS = ["\n\n", "\n", "。", "；", "！", "？", "，", ""]


@dataclass
class Chunk:
    id: str
    source: str
    title: str
    kind: str
    section: str  # what a citation shows after the title: 第二十五条 / 2.1 即时取证技巧
    heading_path: list[str]
    article: str | None
    start: int
    end: int
    text: str
    part: int = 0  # >0 when a long article was split
    meta: dict = field(default_factory=dict)

    @property
    def heading_str(self) -> str:
        return " > ".join(self.heading_path)

    @property
    def embed_text(self) -> str:
        """Title and heading path give the embedding context that the bare article lacks."""
        head = f"{self.title} {self.heading_str}".strip()
        return f"{head}\n{self.text}"

    def to_dict(self) -> dict:
        return asdict(self)


def _headings(doc: Document) -> list[tuple[int, str, int, int]]:
    """(level, title, heading start, body start) for every heading in the body."""
    if doc.headings is not None:
        return doc.headings
    body = doc.text
    found = [(len(m.group(1)), m.group(2).strip(), m.start(), m.end())
             for m in MD_HEADING.finditer(body, doc.body_start)]
    if found:
        return found
    # Plain text laws: "第一条　为了……" lines become level-7 article headings.
    return [(7, m.group(1), m.start(), m.end()) for m in PLAIN_ARTICLE.finditer(body, doc.body_start)]


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _splitter(max_chars: int, overlap: int) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        chunk_size=max_chars, chunk_overlap=overlap, separators=SEPARATORS,
        keep_separator="end", add_start_index=True, strip_whitespace=True,
    )


def chunk_document(doc: Document, max_chars: int = 400, overlap: int = 40) -> list[Chunk]:
    heads = _headings(doc)
    # Sections: (heading path, span). Text before the first heading is the document's own section.
    sections: list[tuple[list[str], int, int]] = []
    first = heads[0][2] if heads else len(doc.text)
    sections.append(([], doc.body_start, first))
    stack: list[tuple[int, str]] = []
    for i, (level, title, hstart, bstart) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = heads[i + 1][2] if i + 1 < len(heads) else len(doc.text)
        # The level-1 heading repeats the document title: keep it out of heading paths.
        path = [t for lv, t in stack if not (lv == 1 and t == doc.title)]
        sections.append((path, bstart, end))

    splitter = _splitter(max_chars, overlap)
    chunks: list[Chunk] = []
    for path, s, e in sections:
        s, e = _strip_span(doc.text, s, e)
        if s >= e:
            continue
        article = next((h for h in reversed(path) if ARTICLE.match(h)), None)
        section = article or (path[-1] if path else BODY_SECTION)
        pieces = [(s, e)]
        if e - s > max_chars:
            pieces = []
            for piece in splitter.create_documents([doc.text[s:e]]):
                ps = s + piece.metadata["start_index"]
                pieces.append(_strip_span(doc.text, ps, ps + len(piece.page_content)))
        for part, (ps, pe) in enumerate(pieces, start=1 if len(pieces) > 1 else 0):
            chunks.append(Chunk(
                id=f"{doc.source}#{len(chunks)}", source=doc.source, title=doc.title, kind=doc.kind,
                section=section, heading_path=path, article=article, start=ps, end=pe,
                text=doc.text[ps:pe], part=part,
            ))
    return chunks
