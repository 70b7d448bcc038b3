from pathlib import Path

from rag.chunking import ARTICLE, chunk_document
from rag.config import REPO_ROOT
from rag.documents import discover, load_document, load_text_document

LAW = """---
title: "示例法"
kind: law
---

# 示例法

2020年1月1日 通过

## 第一章 总则

### 第一条

为了示例，制定本法。

### 第二条

经营者应当诚信。消费者有权退货。

## 第二章 责任

### 第三条

{long}
"""


def make_doc(text: str, rel: str = "laws/example.md"):
    return load_text_document(Path(rel), rel, text)


def test_front_matter_gives_title_and_kind():
    doc = make_doc(LAW.format(long="短。"))
    assert doc.title == "示例法"
    assert doc.kind == "law"
    assert doc.text[doc.body_start:].lstrip().startswith("# 示例法")


def test_each_article_is_one_chunk_with_its_heading_path():
    chunks = chunk_document(make_doc(LAW.format(long="短条文。")))
    articles = [c for c in chunks if c.article]
    assert [c.article for c in articles] == ["第一条", "第二条", "第三条"]
    assert articles[1].heading_path == ["第一章 总则", "第二条"]
    assert articles[1].text == "经营者应当诚信。消费者有权退货。"
    assert articles[2].heading_str == "第二章 责任 > 第三条"


def test_chunk_text_equals_the_source_slice():
    doc = make_doc(LAW.format(long="很长的条文内容。" * 120))
    for c in chunk_document(doc, max_chars=200, overlap=20):
        assert doc.text[c.start:c.end] == c.text


def test_long_article_is_split_and_every_piece_keeps_its_article():
    doc = make_doc(LAW.format(long="很长的条文内容，需要切分。" * 60))
    pieces = [c for c in chunk_document(doc, max_chars=200, overlap=20) if c.article == "第三条"]
    assert len(pieces) > 1
    assert all(len(p.text) <= 200 for p in pieces)
    assert [p.part for p in pieces] == list(range(1, len(pieces) + 1))


def test_preamble_before_first_heading_is_kept_with_the_document_title():
    chunks = chunk_document(make_doc(LAW.format(long="短。")))
    assert chunks[0].section == "正文" and "2020年1月1日" in chunks[0].text


def test_embedded_text_carries_title_and_heading_path():
    c = [c for c in chunk_document(make_doc(LAW.format(long="短。"))) if c.article == "第二条"][0]
    assert c.embed_text.startswith("示例法 第一章 总则 > 第二条\n")


def test_guide_sections_follow_headings():
    text = "---\ntitle: 指南\nkind: guide\n---\n# 指南\n\n引言。\n\n## 一、取证\n\n录像。\n\n### 1.1 照片\n\n拍照。\n"
    chunks = chunk_document(make_doc(text, "guides/g.md"))
    assert [(c.section, c.text) for c in chunks] == [("正文", "引言。"), ("一、取证", "录像。"), ("1.1 照片", "拍照。")]
    assert chunks[2].heading_path == ["一、取证", "1.1 照片"]
    assert chunks[2].kind == "guide" and chunks[2].article is None


def test_shipped_corpus_chunks_cover_every_article_heading():
    corpus = REPO_ROOT / "corpus"
    for path in discover(corpus):
        doc = load_document(path, corpus)
        chunks = chunk_document(doc)
        headings = {line.lstrip("#").strip() for line in doc.text.splitlines()
                    if line.startswith("#") and ARTICLE.match(line.lstrip("#").strip())}
        assert headings <= {c.article for c in chunks}, path.name
        for c in chunks:
            assert doc.text[c.start:c.end] == c.text
