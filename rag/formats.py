"""HTML, PDF and DOCX files turned into ``Document`` objects.

Why: the knowledge base is maintained by people who paste in whatever the
platform or the regulator published: a saved web page, a PDF of a regulation,
a Word file of a guide. Each is reduced to one plain-text string (one block,
paragraph or table row a line) so that chunk offsets point into text a
maintainer can read. Headings that the format marks explicitly (``<h2>``,
Word's 标题 2 style) are recorded in ``Document.headings`` with offsets into
that text; law articles ("第一条　……" at the start of a line) become
article headings either here (when the file also has explicit headings) or by
the plain-text rule in ``rag.chunking`` (when it has none; both use the patterns
of ``rag.docbase``). Every failure is a ``DocumentError`` whose Chinese message
names the file.
"""
from __future__ import annotations

import codecs
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

from .docbase import ARTICLE, PLAIN_ARTICLE, Document, DocumentError, decode_bytes, guess_kind, title_from_name

# One line of produced text: (text, heading level or 0 for body text).
Line = tuple[str, int]

CJK = "\u2e80-\u9fff\u3000-\u303f\uf900-\ufaff\uff00-\uffef"
# A source line break between two CJK characters is layout, not a space.
_CJK_NEWLINE = re.compile(rf"(?<=[{CJK}])[ \t\r\f]*\n[ \t\r\n\f]*(?=[{CJK}])")
_HTML_SPACE = re.compile(r"[ \t\n\r\f\v\xa0]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def load_rich_document(path: Path, rel: str) -> Document:
    suffix = Path(path).suffix.lower()
    if suffix in (".html", ".htm"):
        return load_html(path, rel)
    if suffix == ".pdf":
        return load_pdf(path, rel)
    if suffix == ".docx":
        return load_docx(path, rel)
    raise DocumentError(f"{rel}: 不支持的文件类型（{suffix or '无扩展名'}）")


# --------------------------------------------------------------------------- shared


def _clean_inline(text: str) -> str:
    text = _CJK_NEWLINE.sub("", text)
    return _HTML_SPACE.sub(" ", text).strip()


def _build(lines: list[Line], explicit_headings: bool) -> tuple[str, list[tuple[int, str, int, int]] | None]:
    """Join lines into the document text; return it with the heading list.

    ``None`` headings (no explicit headings) lets ``rag.chunking`` apply its
    Markdown / plain-text article rules to the text. With explicit headings
    the plain-text article lines (the same ``PLAIN_ARTICLE`` rule) are added
    here, so a law page with ``<h2>第一章</h2><p>第一条　……</p>`` still chunks
    by article: below every explicit level, or as a sibling of the last
    explicit article heading when articles are themselves styled as headings.
    """
    parts: list[str] = []
    heads: list[tuple[int, str, int, int]] = []
    spans: list[tuple[int, int]] = []  # heading lines, excluded from the article scan
    pos = 0
    for text, level in lines:
        if parts:
            sep = "\n\n" if level else "\n"
            parts.append(sep)
            pos += len(sep)
        if level:
            heads.append((level, text, pos, pos + len(text)))
            spans.append((pos, pos + len(text)))
        parts.append(text)
        pos += len(text)
    full = "".join(parts)
    if not explicit_headings or not heads:
        return full, None
    explicit = list(heads)
    for m in PLAIN_ARTICLE.finditer(full):
        if any(a <= m.start(1) < b for a, b in spans):
            continue
        # A sibling of the last explicit article heading ("第一条" styled 标题 3), else below everything.
        level = next((h[0] for h in reversed(explicit) if h[2] < m.start() and ARTICLE.match(h[1])), 7)
        heads.append((level, m.group(1), m.start(), m.end()))
    heads.sort(key=lambda h: h[2])
    return full, heads


# --------------------------------------------------------------------------- HTML

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_GB_CHARSETS = {"gb2312", "gbk", "gb18030", "x-gbk", "cp936", "euc-cn", "gb_2312-80", "x-euc-cn"}

_SKIP = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "select"}
_BLOCK = {
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
    "hgroup", "hr", "html", "legend", "li", "main", "menu", "nav", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
}
_CELL = {"td", "th"}
_HEADING = {f"h{i}": i for i in range(1, 7)}
_HEAD_TAGS = {"title", "meta", "link", "base", "style", "script", "noscript", "template", "html", "head"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


def _decode_html(data: bytes, rel: str) -> str:
    """UTF-8 (a valid UTF-8 byte stream wins: pages re-saved as UTF-8 often keep
    their old ``charset=gbk``), else the declared GB charset, else GBK by guess."""
    m = _META_CHARSET.search(data[:4096])
    declared = m.group(1).decode("ascii", "replace").lower() if m else ""
    if declared in _GB_CHARSETS and not data.startswith(b"\xef\xbb\xbf") and b"\x00" not in data[:4096]:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                return data.decode("gb18030")
            except UnicodeDecodeError:
                pass
    try:
        return decode_bytes(data, rel)
    except DocumentError:
        if (not declared or declared in _GB_CHARSETS or b"\x00" in data[:4096]
                or declared.replace("-", "").replace("_", "") == "utf8"):
            raise
        try:
            codecs.lookup(declared)
            return data.decode(declared)
        except (LookupError, UnicodeDecodeError):
            raise DocumentError(
                f"{rel}: 无法识别的文字编码（网页声明为 {declared}，只支持 UTF-8 和 GBK/GB18030）"
            ) from None


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[Line] = []
        self.buf: list[str] = []
        self.skip = 0  # depth inside script/style/...
        self.in_head = False
        self.in_title = False
        self.title_parts: list[str] = []
        self.heading = 0  # level of the open h-tag
        self.pre = 0
        self.cell_open = False

    # -- line assembly
    def _flush(self) -> None:
        raw = "".join(self.buf)
        self.buf = []
        self.cell_open = False
        if self.pre and not self.heading:
            for line in raw.replace("\r\n", "\n").split("\n"):
                line = line.replace("\xa0", " ").rstrip()
                if line.strip():
                    self.lines.append((line, 0))
            return
        text = _clean_inline(raw)
        if text:
            self.lines.append((text, self.heading))

    # -- parser callbacks
    def handle_starttag(self, tag: str, attrs) -> None:
        if self.skip:
            if tag in _SKIP:
                self.skip += 1
            return
        if tag in _SKIP:
            self.skip = 1
            return
        if tag == "head":
            self.in_head = True
            return
        if tag == "body" or (self.in_head and tag not in _HEAD_TAGS):
            self.in_head = False  # like browsers: body content implicitly ends <head>
        if tag == "title":
            self.in_title = True
            return
        if self.in_head:
            return
        if tag in _HEADING:
            self._flush()
            self.heading = _HEADING[tag]
        elif self.heading:
            if tag == "br":
                self.buf.append(" ")
        elif tag in _BLOCK:
            self._flush()
            if tag == "pre":
                self.pre += 1
        elif tag == "br":
            self._flush()
        elif tag in _CELL:
            if self.cell_open or "".join(self.buf).strip():
                self.buf.append(" | ")
            self.cell_open = True
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and alt.strip():
                self.buf.append(alt)

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in _SKIP:  # <script/>: nothing inside
            return
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag in _SKIP:
                self.skip -= 1
            return
        if tag == "head":
            self.in_head = False
            return
        if tag == "title":
            self.in_title = False
            return
        if self.in_head:
            return
        if tag in _HEADING and self.heading:
            self._flush()
            self.heading = 0
        elif self.heading:
            return
        elif tag in _BLOCK:
            self._flush()
            if tag == "pre" and self.pre:
                self.pre -= 1

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.in_title:
            self.title_parts.append(data)
            return
        if self.in_head:
            return
        self.buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def load_html(path: Path, rel: str) -> Document:
    text = _decode_html(Path(path).read_bytes(), rel)
    parser = _HtmlText()
    try:
        parser.feed(text)
        parser.close()
    except Exception as e:  # html.parser is lenient; this is a last resort
        raise DocumentError(f"{rel}: 网页无法解析（{e}）") from e
    title = _clean_inline("".join(parser.title_parts))
    if not title:
        title = next((t for t, lv in parser.lines if lv == 1), "") or title_from_name(Path(path))
    has_headings = any(lv for _, lv in parser.lines)
    full, heads = _build(parser.lines, has_headings)
    return Document(source=rel, title=title, kind=guess_kind({}, rel), text=full,
                    meta={"format": "html"}, headings=heads)


# --------------------------------------------------------------------------- PDF

_WORD_PREFIX = re.compile(r"^(?:Microsoft (?:Word|PowerPoint|Excel)|WPS\S*)\s*-\s*", re.I)


def load_pdf(path: Path, rel: str) -> Document:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    encrypted = f"{rel}: PDF 已加密，无法读取"
    quiet = _QuietLogger("pypdf")  # its warnings about a broken file would only repeat our message
    try:
        reader = PdfReader(str(path))  # tries the empty password itself
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise DocumentError(encrypted)
        pages = [_clean_pdf_page(page.extract_text() or "") for page in reader.pages]
        title = _pdf_title(reader)
    except DocumentError:
        raise
    except (FileNotDecryptedError, DependencyError) as e:
        # DependencyError: AES encryption needs the optional cryptography package.
        raise DocumentError(encrypted) from e
    except Exception as e:  # pypdf raises many types for broken files
        raise DocumentError(f"{rel}: PDF 文件损坏或不是真正的 PDF") from e
    finally:
        quiet.restore()
    if not any(p.strip() for p in pages):
        raise DocumentError(f"{rel}: PDF 没有文字层（可能是扫描件），无法索引")
    full = "\n\n".join(p for p in pages if p.strip())
    return Document(source=rel, title=title or title_from_name(Path(path)), kind=guess_kind({}, rel),
                    text=full, meta={"format": "pdf", "pages": len(pages)}, headings=None)


def _pdf_title(reader) -> str:
    """/Title from the document info, minus the "Microsoft Word - x.docx" that converters leave."""
    try:
        meta = reader.metadata
        title = str(meta.title or "") if meta else ""
    except Exception:
        return ""
    title = _WORD_PREFIX.sub("", _clean_inline(_CONTROL.sub("", title)))
    return re.sub(r"\.(?:docx?|wps|pptx?)$", "", title, flags=re.I).strip()


class _QuietLogger:
    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def restore(self) -> None:
        self.logger.setLevel(self.level)


def _clean_pdf_page(text: str) -> str:
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [ln.replace("\xa0", " ").rstrip() for ln in text.split("\n")]
    return "\n".join(lines).strip("\n")


# --------------------------------------------------------------------------- DOCX

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*([1-9])$", re.I)
_TITLE_STYLE = {"title", "标题"}


def _docx_level(paragraph) -> int:
    """Heading level from the style name (Heading 2 / 标题 2 / Title) or an explicit outline level."""
    style = paragraph.style
    while style is not None:
        name = (style.name or "").strip()
        if name.lower() in _TITLE_STYLE:
            return 1
        m = _HEADING_STYLE.match(name)
        if m:
            return min(int(m.group(1)), 6)
        style = style.base_style
    ppr = paragraph._p.pPr
    lvl = ppr.find(f"{_W}outlineLvl") if ppr is not None else None
    if lvl is not None:
        try:
            val = int(lvl.get(f"{_W}val"))
        except (TypeError, ValueError):
            return 0
        if 0 <= val <= 5:
            return val + 1
    return 0


def _para_text(paragraph) -> str:
    """All visible text of a paragraph, including tracked insertions, smart tags and
    fields that ``Paragraph.text`` skips (it only reads direct runs and hyperlinks)."""
    out = []
    for el in paragraph._p.iter(f"{_W}t", f"{_W}tab", f"{_W}br", f"{_W}cr"):
        if any(a.tag == _MC_FALLBACK for a in el.iterancestors()):
            continue  # the same text box again, for old readers
        if el.tag == f"{_W}t":
            out.append(el.text or "")
        elif el.tag == f"{_W}tab":
            if el.getparent() is not None and el.getparent().tag == f"{_W}r":  # not a tab-stop definition
                out.append("\t")
        else:
            out.append("\n")
    return "".join(out)


def _docx_lines(container, lines: list[Line], first_title: list[str]) -> None:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for item in container.iter_inner_content():
        if isinstance(item, Paragraph):
            level = _docx_level(item)
            if level:
                text = _clean_inline(_para_text(item))
                if text:
                    lines.append((text, level))
                    if level == 1 and not first_title:
                        first_title.append(text)
                continue
            for line in _para_text(item).replace("\xa0", " ").split("\n"):
                line = line.rstrip()
                if line.strip():
                    lines.append((line.strip(" "), 0))
        elif isinstance(item, Table):
            for row in item.rows:
                cells, seen = [], set()
                for cell in row.cells:
                    if id(cell._tc) in seen:  # merged cells repeat
                        continue
                    seen.add(id(cell._tc))
                    cells.append(_clean_inline(cell.text))
                row_text = " | ".join(c for c in cells)
                if row_text.replace("|", "").strip():
                    lines.append((row_text, 0))


def load_docx(path: Path, rel: str) -> Document:
    try:
        import docx

        d = docx.Document(str(path))
        lines: list[Line] = []
        first_title: list[str] = []
        _docx_lines(d, lines, first_title)
        title = _clean_inline(d.core_properties.title or "")
    except Exception as e:  # BadZipFile, KeyError, PackageNotFoundError, lxml errors...
        raise DocumentError(f"{rel}: DOCX 文件损坏，无法读取") from e
    title = title or (first_title[0] if first_title else "") or title_from_name(Path(path))
    has_headings = any(lv for _, lv in lines)
    full, heads = _build(lines, has_headings)
    return Document(source=rel, title=title, kind=guess_kind({}, rel), text=full,
                    meta={"format": "docx"}, headings=heads)
