"""Check that every reference and every figure in the project's howto guides is grounded.

Why: the assistant quotes howto sentences verbatim as "怎么做" steps next to the statute,
so a sentence that cites an article the corpus does not have, or states a figure the cited
article does not contain, would put a wrong legal claim in front of a shopper with a
citation that seems to back it. The rules writers follow are in docs/guide-writing.md.

Usage:
    python -m eval.check_guides [FILES...] [--corpus DIR]

Without FILES every corpus document whose front matter says ``kind: howto`` is checked.
Exit status 1 when there is at least one error, 0 otherwise; warnings never fail.

From Python:
    from eval.check_guides import LawIndex, check_file
    laws = LawIndex.from_corpus("corpus")
    problems = check_file("corpus/guides/howto-x.md", laws)

What is checked, per sentence (split on 。！？ and newlines; a numbered step is one sentence):
- errors: a 《法名》 that is no corpus law; a 第N条 that the named law does not have; a 第N条
  with no law named before it; a figure (arabic or Chinese numerals, 7天 = 七日, 500元 = 五百元,
  百分之三十 = 30%) that none of the sentence's cited articles contains; a figure in a sentence
  that cites nothing (unless it cites an official source declared in front matter and the
  figure is in that source's ``fact``);
- warnings: a factual sentence (not a heading, not a question) that cites nothing.
"""
from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from rag.chunking import ARTICLE, chunk_document
from rag.config import Settings
from rag.documents import Document, DocumentError, decode_bytes, discover, load_document, load_text_document

# ---------------------------------------------------------------- numbers

CN_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
CN_SMALL_UNIT = {"十": 10, "百": 100, "千": 1000}
CN_BIG_UNIT = {"万": 10_000, "亿": 100_000_000}
CN_CHARS = "".join(CN_DIGIT) + "".join(CN_SMALL_UNIT) + "".join(CN_BIG_UNIT)
ARABIC = r"\d+(?:\.\d+)?"
# A Chinese numeral is a figure only before one of these: "一般", "统一", "十分重要" are words, not figures.
UNIT = r"(?:个)?(?:工作日|自然日|日|天|周|星期|月(?!份)|年|小时|分钟|倍|元|岁|%|％)"
NUMBER = re.compile(
    rf"百分之(?P<pct>[{CN_CHARS}]+|{ARABIC})"
    rf"|(?P<ar>{ARABIC})(?P<mul>[万亿])?(?P<arunit>{UNIT})?"
    rf"|(?P<cn>[{CN_CHARS}]+)(?P<cnunit>{UNIT})"
)
# Things that look like numbers but are not figures: law titles (《网络购买商品七日无理由退货暂行办法》),
# ordinals and article numbers (第五十五条, 第二款, 第一项), list markers ((一), (1), 一、, 1.).
NOT_FIGURES = (
    re.compile(r"《[^《》]*》"),
    re.compile(rf"第[{CN_CHARS}\d]+"),
    re.compile(rf"[（(][{CN_CHARS}\d]{{1,3}}[）)]"),
    re.compile(rf"^[ \t]*(?:\d+(?:[.．][ \t]|[、)）])|[{CN_CHARS}]+、)", re.M),
)
FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９．", "0123456789.")


def cn_to_int(numeral: str) -> int:
    """七 → 7, 十五 → 15, 一百零五 → 105, 两万五千 → 25000, 二〇二六 → 2026.

    Why by hand: the numerals in statutes are few and regular, and a dependency for this
    would be heavier than the twenty lines it replaces.
    """
    if not any(c in CN_SMALL_UNIT or c in CN_BIG_UNIT for c in numeral):
        return int("".join(str(CN_DIGIT[c]) for c in numeral))
    total = section = digit = 0
    for c in numeral:
        if c in CN_DIGIT:
            digit = CN_DIGIT[c]
        elif c in CN_SMALL_UNIT:
            section += (digit or 1) * CN_SMALL_UNIT[c]
            digit = 0
        else:
            total += (section + digit or 1) * CN_BIG_UNIT[c]
            section = digit = 0
    return total + section + digit


def _value(text: str) -> int | float:
    """An arabic or Chinese numeral as a number, so that 7 and 七 compare equal."""
    if re.fullmatch(ARABIC, text):
        v = float(text)
        return int(v) if v.is_integer() else v
    return cn_to_int(text)


def figure_text(text: str) -> str:
    """The text with everything that is a number but not a figure blanked out (see NOT_FIGURES)."""
    text = text.translate(FULLWIDTH_DIGITS)
    for pattern in NOT_FIGURES:
        text = pattern.sub(" ", text)
    return text


def figures(text: str) -> dict[int | float, str]:
    """Figures stated in a text, value → how it was written first (七日, 500元, 百分之三十)."""
    found: dict[int | float, str] = {}
    for m in NUMBER.finditer(figure_text(text)):
        if m.group("pct"):
            value = _value(m.group("pct"))
        elif m.group("ar"):
            value = _value(m.group("ar")) * (CN_BIG_UNIT[m.group("mul")] if m.group("mul") else 1)
        else:
            value = cn_to_int(m.group("cn"))
        found.setdefault(value, m.group(0))
    return found


# ---------------------------------------------------------------- laws

REF = re.compile(rf"《(?P<law>[^《》]+)》|第(?P<num>[{CN_CHARS}\d]+)条(?:之(?P<sub>[{CN_CHARS}\d]+))?")
ARTICLE_NUMBER = re.compile(rf"第(?P<num>[{CN_CHARS}\d]+)条(?:之(?P<sub>[{CN_CHARS}\d]+))?")
STATE_PREFIX = "中华人民共和国"
EXCERPT_MARK = "(节选)"


def law_key(name: str) -> str:
    """How a law name is compared: width-folded, no spaces, 中华人民共和国 optional."""
    key = re.sub(r"\s+", "", unicodedata.normalize("NFKC", name))
    return key[len(STATE_PREFIX):] if key.startswith(STATE_PREFIX) else key


def article_key(num: str, sub: str | None = None) -> tuple[int, int]:
    """第五十五条 → (55, 0), 第十条之一 → (10, 1); 第55条 names the same article."""
    return _value(num), _value(sub) if sub else 0


def _names(doc: Document) -> set[str]:
    """Names a guide may use for a law: its title, and for an excerpt ("民法典（节选）：第七编…")
    the whole code's name, so that 《民法典》 finds every excerpt file."""
    key = law_key(doc.title)
    names = {key}
    if EXCERPT_MARK in key:
        names.add(law_key(key.split(EXCERPT_MARK, 1)[0]))
    return names


def _articles(doc: Document) -> dict[tuple[int, int], str]:
    """Article → text, using the chunker's own article detection (one chunk per article)."""
    articles: dict[tuple[int, int], str] = {}
    for chunk in chunk_document(doc, max_chars=10**9, overlap=0):
        m = ARTICLE.match(chunk.article or "") and ARTICLE_NUMBER.match(chunk.article)
        if m:
            key = article_key(m.group("num"), m.group("sub"))
            articles[key] = (articles.get(key, "") + "\n" + chunk.text).strip()
    return articles


@dataclass
class LawIndex:
    """Every corpus law by the names a guide may cite it under, with its articles' texts."""

    by_name: dict[str, list[str]] = field(default_factory=dict)  # law_key → sources
    articles: dict[str, dict[tuple[int, int], str]] = field(default_factory=dict)  # source → article → text

    @classmethod
    def from_documents(cls, docs: list[Document]) -> "LawIndex":
        index = cls()
        for doc in docs:
            if doc.kind != "law":
                continue
            index.articles[doc.source] = _articles(doc)
            for name in _names(doc):
                index.by_name.setdefault(name, []).append(doc.source)
        return index

    @classmethod
    def from_corpus(cls, corpus_dir: Path | str) -> "LawIndex":
        return cls.from_documents([doc for doc, _ in load_corpus(corpus_dir)])

    def resolve(self, law: str) -> list[str]:
        """The corpus files a law name refers to (two for 《民法典》, one otherwise, none if unknown)."""
        return self.by_name.get(law_key(law), [])

    def article(self, law: str, key: tuple[int, int]) -> str | None:
        """The article's text, from whichever file of the law has it; None when none has."""
        texts = [self.articles[s][key] for s in self.resolve(law) if key in self.articles[s]]
        return "\n".join(texts) if texts else None


def load_corpus(corpus_dir: Path | str) -> list[tuple[Document | None, Path]]:
    """Every readable corpus document; (None, path) for a file that cannot be read, so that an
    unreadable howto guide is reported instead of silently skipped."""
    out = []
    for path in discover(Path(corpus_dir)):
        try:
            out.append((load_document(path, corpus_dir), path))
        except DocumentError:
            out.append((None, path))
    return out


def howto_files(corpus_dir: Path | str) -> list[Path]:
    """Corpus documents with ``kind: howto``, plus unreadable files named howto-* (to report them)."""
    return [path for doc, path in load_corpus(corpus_dir)
            if (doc is not None and doc.kind == "howto") or (doc is None and path.name.startswith("howto-"))]


# ---------------------------------------------------------------- sentences

STEP = re.compile(r"^[ \t]*\d+(?:[.．][ \t]+|[、)）][ \t]*)")
LINE_MARKER = re.compile(r"^[ \t]*(?:[-*+][ \t]+|>[ \t]*)+")
HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]")
ENDS = "。！？!?"
CLOSERS = "”’」』）)】"
OPENERS, SHUTTERS = "（(《【“「", "）)》】”」"
CITATION_START = re.compile(r"^[（(](?:依据|来源)[:：]")
SOURCE_CITATION = re.compile(r"[（(]来源[:：]")


@dataclass
class Sentence:
    line: int
    text: str

    @property
    def is_question(self) -> bool:
        return self.text.rstrip(CLOSERS + " ").endswith(("？", "?"))

    @property
    def is_factual(self) -> bool:
        """Claims something: has Chinese text and is no question (headings never get here)."""
        return not self.is_question and re.search(r"[\u4e00-\u9fff]", self.text) is not None


def split_line(text: str) -> list[str]:
    """Split on 。！？ outside brackets, keeping closing quotes with their sentence, and glue a
    trailing "（依据：……）" written after the full stop back onto the sentence it belongs to."""
    pieces, start, depth, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        depth += (c in OPENERS) - (c in SHUTTERS and depth > 0)
        if c in ENDS and depth == 0:
            while i + 1 < len(text) and (text[i + 1] in ENDS or text[i + 1] in CLOSERS):
                i += 1
            pieces.append(text[start:i + 1])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    out: list[str] = []
    for piece in (p.strip() for p in pieces):
        if not piece:
            continue
        if out and CITATION_START.match(piece):
            out[-1] += piece
        else:
            out.append(piece)
    return out


def sentences(text: str, body_start: int = 0) -> list[Sentence]:
    """Sentences of a Markdown body with their 1-based line numbers in the file.

    Headings are skipped (they are the shopper's questions). A numbered step, with any
    indented continuation lines, is one sentence: it is quoted as one unit.
    """
    first_line = text.count("\n", 0, body_start) + 1
    lines = text[body_start:].split("\n")
    out: list[Sentence] = []
    i = 0
    while i < len(lines):
        line, number = lines[i], first_line + i
        i += 1
        if not line.strip() or HEADING.match(line) or re.fullmatch(r"[\s|:\-]+", line):
            continue
        if STEP.match(line):
            step = STEP.sub("", line, count=1).strip()
            while i < len(lines) and lines[i][:1] in (" ", "\t") and lines[i].strip() \
                    and not STEP.match(lines[i]) and not LINE_MARKER.match(lines[i]):
                step += lines[i].strip()
                i += 1
            out.append(Sentence(number, step))
            continue
        out.extend(Sentence(number, s) for s in split_line(LINE_MARKER.sub("", line)))
    return out


# ---------------------------------------------------------------- checking

@dataclass
class Reference:
    law: str | None  # None: a 第N条 with no law named before it in the sentence
    article: str  # as written: 第五十五条
    key: tuple[int, int]

    @property
    def label(self) -> str:
        return f"《{self.law}》{self.article}" if self.law else self.article


@dataclass
class Problem:
    path: str
    line: int
    sentence: str
    reason: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        label = "错误" if self.severity == "error" else "警告"
        return f"{self.path}:{self.line}: {label}：{self.reason} ——「{self.sentence}」"


def references(sentence: str) -> list[Reference]:
    """Every 《法名》第N条 in a sentence; a bare 第N条 belongs to the last law named before it
    (《消费者权益保护法》第五十五条、第五十六条), and 第N条第M款 is 第N条."""
    refs, law = [], None
    for m in REF.finditer(sentence):
        if m.group("law"):
            law = m.group("law").strip()
        else:
            article = m.group(0)
            refs.append(Reference(law, article, article_key(m.group("num"), m.group("sub"))))
    return refs


def source_figures(meta: dict) -> dict[int | float, str]:
    """Figures in the ``fact`` of each front-matter ``official_sources`` entry (docs/guide-writing.md):
    a sentence citing （来源：……） may state those."""
    found: dict[int | float, str] = {}
    for entry in meta.get("official_sources") or []:
        if isinstance(entry, dict):
            for value, shown in figures(str(entry.get("fact", ""))).items():
                found.setdefault(value, shown)
    return found


def _figure_problems(sentence: Sentence, cited: list[Reference], texts: list[str],
                     allowed_from_sources: dict) -> list[str]:
    """Reasons for each figure in the sentence that the cited articles (or declared sources) lack."""
    stated = figures(sentence.text)
    if not stated:
        return []
    has_source = SOURCE_CITATION.search(sentence.text) is not None
    available = set(allowed_from_sources) if has_source else set()
    for text in texts:
        available |= set(figures(text))
    missing = [(v, shown) for v, shown in stated.items() if v not in available]
    if not missing:
        return []
    shown = "、".join(f"“{s}”" for _, s in missing)
    if cited:
        where = "、".join(r.label for r in cited)
        return [f"数字{shown}在所引条文中找不到（{where}）"]
    if has_source:
        return [f"数字{shown}不在头信息 official_sources 的 fact 里，句子又没有引用法条"]
    return [f"句子写了数字{shown}，但没有注明依据的法条"]


def check_sentence(sentence: Sentence, laws: LawIndex, allowed_from_sources: dict | None = None) -> list[Problem]:
    """Problems of one sentence (path left empty for the caller to fill in)."""
    problems: list[Problem] = []

    def add(reason: str, severity: str = "error") -> None:
        problems.append(Problem("", sentence.line, sentence.text, reason, severity))

    refs = references(sentence.text)
    texts, resolved = [], []
    for ref in refs:
        if ref.law is None:
            add(f"{ref.article}前面没有写明是哪部法律（应写成《法名》{ref.article}）")
        elif not laws.resolve(ref.law):
            add(f"《{ref.law}》不在语料库里（corpus/laws 中没有这个标题的法律）")
        elif (text := laws.article(ref.law, ref.key)) is None:
            files = "、".join(laws.resolve(ref.law))
            add(f"《{ref.law}》没有{ref.article}（{files} 里找不到这一条）")
        else:
            texts.append(text)
            resolved.append(ref)
    if refs and not resolved:
        return problems  # nothing to compare figures with; the references themselves are wrong
    if sentence.is_factual or refs:
        for reason in _figure_problems(sentence, resolved, texts, allowed_from_sources or {}):
            add(reason)
    if not refs and not problems and sentence.is_factual and not SOURCE_CITATION.search(sentence.text):
        add("没有注明依据（《法名》第N条）", "warning")
    return problems


def check_document(doc: Document, laws: LawIndex, path: str) -> list[Problem]:
    """Problems of every sentence of one guide, front matter excluded."""
    allowed = source_figures(doc.meta)
    problems = []
    for sentence in sentences(doc.text, doc.body_start):
        for p in check_sentence(sentence, laws, allowed):
            p.path = path
            problems.append(p)
    return problems


def check_file(path: Path | str, laws: LawIndex) -> list[Problem]:
    """Problems of one guide file (it need not lie inside the corpus)."""
    path = Path(path)
    shown = display_path(path)
    try:
        text = decode_bytes(path.read_bytes(), shown).replace("\r\n", "\n")
        doc = load_text_document(path, shown, text)
    except (OSError, DocumentError) as e:
        return [Problem(shown, 1, "", f"文件无法读取（{e}）")]
    return check_document(doc, laws, shown)


def display_path(path: Path) -> str:
    """Relative to the working directory when possible: short, and clickable in editors."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- command line

def report(problems: list[Problem], files: int) -> str:
    """Errors first, then the un-cited sentences as a separate list, then a one-line summary."""
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    lines = [str(p) for p in errors]
    if warnings:
        lines += ["", "未注明依据的句子（警告，不算失败）："] + [str(p) for p in warnings]
    lines += ["", f"检查了 {files} 个指南：{len(errors)} 个错误，{len(warnings)} 条警告。"]
    return "\n".join(lines).lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.check_guides", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="guides to check (default: every kind: howto document)")
    parser.add_argument("--corpus", type=Path, default=Settings().corpus_dir, help="corpus folder with laws/")
    args = parser.parse_args(argv)
    laws = LawIndex.from_corpus(args.corpus)
    files = args.files or howto_files(args.corpus)
    if not files:
        print(f"没有找到 kind: howto 的指南（{display_path(args.corpus)}）。")
        return 0
    problems = [p for f in files for p in check_file(f, laws)]
    print(report(problems, len(files)))
    return 1 if any(p.severity == "error" for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
