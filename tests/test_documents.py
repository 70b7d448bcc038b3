"""Markdown / text loading: front matter, encodings, refusals with clear messages, discovery."""
from __future__ import annotations


import pytest

from conftest import raises_naming, write
from rag.chunking import chunk_document
from rag.documents import DocumentError, decode_bytes, discover, load_document, parse_front_matter


# --------------------------------------------------------------------------- front matter


def test_front_matter_title_kind_and_body(corpus):
    text = '---\ntitle: "淘宝退货指南"\nkind: law\nissuer: 测试\n---\n\n# 另一个标题\n\n正文。\n'
    path = write(corpus / "guides" / "taobao.md", text)
    doc = load_document(path, corpus)
    assert doc.source == "guides/taobao.md"
    assert doc.title == "淘宝退货指南"
    assert doc.kind == "law"  # front matter wins over the folder
    assert doc.meta["issuer"] == "测试"
    assert doc.text == text
    assert doc.text[doc.body_start:].startswith("\n# 另一个标题")
    assert doc.headings is None


def test_kind_and_title_guessed_without_front_matter(corpus):
    law = load_document(write(corpus / "laws" / "x.md", "# 产品质量法\n\n正文\n"), corpus)
    assert (law.kind, law.title, law.body_start) == ("law", "产品质量法", 0)
    guide = load_document(write(corpus / "guides" / "jd_return-policy.md", "没有标题的正文\n"), corpus)
    assert (guide.kind, guide.title) == ("guide", "jd return policy")
    other = load_document(write(corpus / "misc.txt", "---\nkind: other\n---\n内容\n"), corpus)
    assert other.kind == "guide"  # unknown kinds fall back to the folder rule


def test_invalid_yaml_front_matter_is_rejected(corpus):
    path = write(corpus / "guides" / "bad.md", '---\ntitle: "未闭合\nkind: [guide\n---\n正文\n')
    with raises_naming("guides/bad.md", "YAML"):
        load_document(path, corpus)


def test_front_matter_that_is_not_a_mapping_is_rejected(corpus):
    path = write(corpus / "guides" / "list.md", "---\n- a\n- b\n---\n正文\n")
    with raises_naming("guides/list.md", "YAML", "键值对"):
        load_document(path, corpus)


def test_parse_front_matter_without_block():
    assert parse_front_matter("# 标题\n---\n", "x.md") == ({}, 0)


# --------------------------------------------------------------------------- encodings


def test_utf8_with_bom_and_crlf(corpus):
    data = b"\xef\xbb\xbf" + "---\r\ntitle: 带BOM的文件\r\n---\r\n正文第一行\r\n第二行\r\n".encode("utf-8")
    doc = load_document(write(corpus / "guides" / "bom.md", data), corpus)
    assert not doc.text.startswith("\ufeff")
    assert "\r" not in doc.text
    assert doc.title == "带BOM的文件"
    assert doc.text[doc.body_start:] == "正文第一行\n第二行\n"


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "gb2312"])
def test_gbk_text_is_decoded(corpus, encoding):
    text = "消费者权益保护法\n\n第二十五条　经营者采用网络、电视、电话、邮购等方式销售商品，消费者有权自收到商品之日起七日内退货。\n"
    doc = load_document(write(corpus / "laws" / f"cpl-{encoding}.txt", text.encode(encoding)), corpus)
    assert doc.text == text


@pytest.mark.parametrize("data", [
    ("Café résumé naïve déjà vu, garçon à la française. " * 4).encode("latin-1"),
    ("これは日本語のテキストです。ひらがなとカタカナ。" * 4).encode("euc_jp"),
], ids=["latin-1", "euc-jp"])
def test_undecodable_text_is_rejected(corpus, data):
    path = write(corpus / "guides" / "foreign.txt", data)
    with raises_naming("guides/foreign.txt", "编码", "UTF-8", "GBK"):
        load_document(path, corpus)


def test_binary_file_with_md_extension_is_rejected(corpus):
    path = write(corpus / "guides" / "image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with raises_naming("guides/image.md", "二进制"):
        load_document(path, corpus)


def test_empty_file_is_rejected(corpus):
    path = write(corpus / "guides" / "empty.md", b"")
    with raises_naming("guides/empty.md", "空"):
        load_document(path, corpus)


def test_front_matter_only_has_no_text(corpus):
    path = write(corpus / "guides" / "meta-only.md", "---\ntitle: 只有头信息\n---\n\n  \n")
    with raises_naming("guides/meta-only.md", "没有可索引的文字"):
        load_document(path, corpus)


def test_size_limit(corpus):
    path = write(corpus / "guides" / "big.md", "售后" * 1000)
    with raises_naming("guides/big.md", "太大"):
        load_document(path, corpus, max_bytes=1000)
    assert load_document(path, corpus, max_bytes=10_000).text == "售后" * 1000


def test_decode_bytes_directly():
    assert decode_bytes("七日无理由退货".encode("gbk"), "x") == "七日无理由退货"
    with pytest.raises(DocumentError, match="^x: "):
        decode_bytes(b"\x00abc", "x")


# --------------------------------------------------------------------------- plain-text laws


def test_plain_text_law_is_chunked_into_articles(corpus):
    text = (
        "网络购买商品七日无理由退货暂行办法\n\n"
        "第一条　为保障消费者合法权益，制定本办法。\n"
        "第二条　消费者为生活消费需要通过网络购买商品，适用本办法。\n"
        "　　第十条 选择无理由退货的消费者应当自收到商品之日起七日内向其提出退货申请。\n"
        "本条不是第三条　的开头，因为不在行首。\n"
    )
    doc = load_document(write(corpus / "laws" / "seven-day.txt", text), corpus)
    assert doc.kind == "law"
    assert doc.title == "seven day"
    chunks = chunk_document(doc)
    for c in chunks:
        assert c.text == doc.text[c.start:c.end]
    assert [c.article for c in chunks] == [None, "第一条", "第二条", "第十条"]
    assert chunks[0].section == "正文" and chunks[0].text == "网络购买商品七日无理由退货暂行办法"
    assert chunks[1].text == "为保障消费者合法权益，制定本办法。"
    assert chunks[3].text.endswith("因为不在行首。")
    assert all(c.source == "laws/seven-day.txt" for c in chunks)


def test_markdown_headings_win_over_plain_articles(corpus):
    text = "# 指南\n\n## 退货\n\n第一条　这里只是正文里的一行。\n"
    doc = load_document(write(corpus / "guides" / "g.md", text), corpus)
    chunks = chunk_document(doc)
    assert [(c.heading_path, c.article) for c in chunks] == [(["退货"], None)]


# --------------------------------------------------------------------------- discovery


def test_discover_skips_readme_hidden_and_unsupported(corpus):
    for rel in ["README.md", "laws/readme.MD", "laws/README.txt", "laws/a.md", "guides/b.txt",
                "guides/sub/c.markdown", ".git/x.md", "guides/.drafts/d.md", "guides/.hidden.md",
                "guides/notes.doc", "guides/e.pdf", "guides/f.html"]:
        write(corpus / rel, "x")
    names = [p.relative_to(corpus).as_posix() for p in discover(corpus)]
    assert names == ["guides/b.txt", "guides/e.pdf", "guides/f.html", "guides/sub/c.markdown", "laws/a.md"]


def test_discover_missing_folder(tmp_path):
    assert discover(tmp_path / "nope") == []
