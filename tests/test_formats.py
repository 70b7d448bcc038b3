"""HTML, PDF and DOCX loading: text, titles, headings, articles, and clear errors.

Every fixture is generated here in tmp_path: PDFs by a tiny hand-written PDF
writer (a Type0 font with a ToUnicode map gives a real Chinese text layer
without reportlab), DOCX files with python-docx, broken files as raw bytes.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from conftest import raises_naming, write
from rag.chunking import chunk_document
from rag.documents import Document, discover, load_document
from rag.formats import load_rich_document

# --------------------------------------------------------------------------- helpers


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal valid PDF whose text layer is Unicode (Type0 font, Identity-H, ToUnicode CMap).

    Each string is one text line; the glyph code of a character is its code point,
    and the ToUnicode map says so, which is all a text extractor needs.
    """
    chars = sorted({c for page in pages for line in page for c in line})
    bfchar = "\n".join(f"<{ord(c):04X}> <{ord(c):04X}>" for c in chars)
    cmap = (
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
        "1 begincodespacerange <0000> <FFFF> endcodespacerange\n"
        f"{len(chars)} beginbfchar\n{bfchar}\nendbfchar\n"
        "endcmap CMapName currentdict /CMap defineresource pop end end"
    ).encode()

    def stream(data: bytes) -> bytes:
        return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    kids = " ".join(f"{7 + 2 * i} 0 R" for i in range(len(pages)))
    info = "<< /Producer (tests)"
    if title is not None:
        info += " /Title <FEFF" + title.encode("utf-16-be").hex().upper() + ">"
    objs = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /Identity-H "
           b"/DescendantFonts [4 0 R] /ToUnicode 5 0 R >>",
        4: b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light "
           b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
           b"/FontDescriptor << /Type /FontDescriptor /FontName /STSong-Light /Flags 4 "
           b"/FontBBox [0 -200 1000 900] /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 80 >> "
           b"/DW 1000 >>",
        5: stream(cmap),
        6: (info + " >>").encode(),
    }
    for i, page in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "50 800 Td"]
        ops += ["<" + line.encode("utf-16-be").hex().upper() + "> Tj T*" for line in page]
        ops.append("ET")
        objs[7 + 2 * i] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {8 + 2 * i} 0 R >>"
        ).encode()
        objs[8 + 2 * i] = stream("\n".join(ops).encode())
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
    xref = len(out)
    size = max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


LAW_PAGES = [
    ["网络购买商品七日无理由退货暂行办法（测试）",
     "第一条　为保障消费者合法权益，制定本办法。",
     "第二条　消费者为生活消费需要通过网络购买商品，适用本办法。"],
    ["Page 2 of 2",
     "第三条　网络商品销售者应当依法履行七日无理由退货义务。"],
]


def assert_offsets(doc: Document, chunks) -> None:
    assert chunks
    for c in chunks:
        assert c.text == doc.text[c.start:c.end]
        assert c.text.strip() == c.text and c.text
    for level, title, hstart, bstart in doc.headings or []:
        assert 0 <= hstart < bstart <= len(doc.text)
        assert title in doc.text[hstart:bstart]


def by_section(chunks) -> dict[str, object]:
    return {c.section: c for c in chunks}


# --------------------------------------------------------------------------- PDF


def test_pdf_text_layer_title_and_articles(corpus):
    path = write(corpus / "laws" / "seven-day-return.pdf", make_pdf(LAW_PAGES, title="七日无理由退货办法"))
    doc = load_document(path, corpus)
    assert doc.source == "laws/seven-day-return.pdf"
    assert doc.kind == "law"
    assert doc.title == "七日无理由退货办法"
    assert doc.headings is None  # the plain-text 第X条 rule in chunking applies
    assert doc.meta["pages"] == 2
    # pages are joined with a blank line
    assert "制定本办法。" in doc.text
    assert "适用本办法。\n\nPage 2 of 2\n第三条" in doc.text
    chunks = chunk_document(doc)
    assert_offsets(doc, chunks)
    arts = by_section(chunks)
    assert {"第一条", "第二条", "第三条"} <= set(arts)
    assert arts["第三条"].article == "第三条"
    assert "七日无理由退货义务" in arts["第三条"].text
    assert "第二条" not in arts["第一条"].text


def test_pdf_title_falls_back_to_file_name_and_guide_kind(corpus):
    path = write(corpus / "guides" / "return_policy.pdf", make_pdf([["Return within 7 days", "Refund in 3 days"]]))
    doc = load_document(path, corpus)
    assert doc.title == "return policy"
    assert doc.kind == "guide"
    assert doc.text == "Return within 7 days\nRefund in 3 days"


def test_pdf_word_converter_title_is_cleaned(corpus):
    path = write(corpus / "guides" / "x.pdf", make_pdf([["text"]], title="Microsoft Word - 售后指南.docx"))
    assert load_document(path, corpus).title == "售后指南"


def _encrypt(src: bytes, dst: Path, user: str, owner: str | None = None) -> Path:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(src)))
    writer.encrypt(user, owner, algorithm="RC4-128")
    with open(dst, "wb") as fh:
        writer.write(fh)
    return dst


def test_pdf_encrypted_is_rejected(corpus):
    path = _encrypt(make_pdf(LAW_PAGES), corpus / "laws" / "locked.pdf", user="secret")
    with raises_naming("laws/locked.pdf") as info:
        load_document(path, corpus)
    assert str(info.value) == "laws/locked.pdf: PDF 已加密，无法读取"


def test_pdf_with_only_owner_password_is_read(corpus):
    """Empty user password: readers open it without asking, so must we."""
    path = _encrypt(make_pdf(LAW_PAGES, title="有权限限制的PDF"), corpus / "laws" / "restricted.pdf", user="", owner="owner")
    doc = load_document(path, corpus)
    assert doc.title == "有权限限制的PDF"
    assert "第三条" in doc.text


def test_pdf_without_text_layer_is_rejected(corpus):
    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    writer.add_blank_page(595, 842)
    path = corpus / "laws" / "scanned.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)
    with raises_naming("laws/scanned.pdf") as info:
        load_document(path, corpus)
    assert str(info.value) == "laws/scanned.pdf: PDF 没有文字层（可能是扫描件），无法索引"


@pytest.mark.parametrize("data", [
    os.urandom(2048).replace(b"\x00", b"\x01"),
    b"%PDF-1.4\n this is not really a pdf \n",
    "这其实是一个改了扩展名的文本文件".encode("utf-8"),
], ids=["random", "fake-header", "text"])
def test_pdf_malformed_is_rejected(corpus, data, caplog):
    path = write(corpus / "guides" / "broken.pdf", data)
    with raises_naming("guides/broken.pdf") as info:
        load_document(path, corpus)
    assert str(info.value) == "guides/broken.pdf: PDF 文件损坏或不是真正的 PDF"


def test_pdf_truncated_is_rejected(corpus):
    data = make_pdf(LAW_PAGES)
    path = write(corpus / "laws" / "cut.pdf", data[: len(data) // 3])
    with raises_naming("laws/cut.pdf", "损坏"):
        load_document(path, corpus)


# --------------------------------------------------------------------------- DOCX


def make_docx(path: Path, title: str | None = None) -> Path:
    d = docx.Document()
    if title is not None:
        d.core_properties.title = title
    d.add_paragraph("电商售后维权指南", style="Title")
    d.add_paragraph("本指南说明常见售后问题的处理方法。")
    d.add_paragraph("一、退货", style="Heading 1")
    d.add_paragraph("1.1 七天无理由退货", style="Heading 2")
    d.add_paragraph("签收之日起七日内可以申请无理由退货。")
    d.add_paragraph("1.2 质量问题退货", style="Heading 2")
    d.add_paragraph("质量问题退货的运费由商家承担。")
    d.add_paragraph("二、相关规定", style="Heading 1")
    d.add_paragraph("第一条", style="Heading 3")
    d.add_paragraph("经营者应当保证商品质量。")
    d.add_paragraph("第二条　消费者享有自主选择商品的权利。")  # plain paragraph, still an article
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "问题"
    table.cell(0, 1).text = "期限"
    table.cell(1, 0).text = "无理由退货"
    table.cell(1, 1).text = "七日"
    d.add_paragraph("表格之后的段落。")
    d.save(path)
    return path


def test_docx_headings_title_tables_and_articles(corpus):
    path = make_docx(corpus / "guides" / "after-sales.docx")
    doc = load_document(path, corpus)
    assert doc.kind == "guide"
    assert doc.title == "电商售后维权指南"  # first Title paragraph; core title is empty
    assert doc.headings is not None
    levels = [(lv, t) for lv, t, _, _ in doc.headings]
    assert (1, "一、退货") in levels and (2, "1.1 七天无理由退货") in levels and (3, "第一条") in levels
    for lv, t, hs, bs in doc.headings:
        if lv <= 6:
            assert doc.text[hs:bs] == t  # explicit headings are whole lines
    assert "问题 | 期限\n无理由退货 | 七日\n表格之后的段落。" in doc.text

    chunks = chunk_document(doc)
    assert_offsets(doc, chunks)
    sections = by_section(chunks)
    assert sections["1.1 七天无理由退货"].heading_path == ["一、退货", "1.1 七天无理由退货"]
    assert sections["1.1 七天无理由退货"].text == "签收之日起七日内可以申请无理由退货。"
    assert sections["1.2 质量问题退货"].heading_path == ["一、退货", "1.2 质量问题退货"]
    first = sections["第一条"]
    assert first.article == "第一条" and first.heading_path == ["二、相关规定", "第一条"]
    assert first.text == "经营者应当保证商品质量。"
    second = sections["第二条"]
    assert second.article == "第二条" and second.heading_path == ["二、相关规定", "第二条"]
    assert "自主选择" in second.text and "无理由退货 | 七日" in second.text
    # the Title heading repeats the document title and is kept out of heading paths
    assert all("电商售后维权指南" not in c.heading_path for c in chunks)
    assert sections["正文"].heading_path == [] and sections["正文"].text == "本指南说明常见售后问题的处理方法。"


def test_docx_core_title_wins(corpus):
    path = make_docx(corpus / "guides" / "g.docx", title="核心属性标题")
    assert load_document(path, corpus).title == "核心属性标题"


def test_docx_chinese_style_names_and_file_name_title(corpus):
    d = docx.Document()
    style = d.styles.add_style("标题 2", 1)  # WPS-style localized name
    d.add_paragraph("退款时限", style=style)
    d.add_paragraph("退款在三个工作日内原路返回。")
    path = corpus / "guides" / "refund_rules.docx"
    d.save(path)
    doc = load_document(path, corpus)
    assert doc.title == "refund rules"
    assert doc.headings == [(2, "退款时限", 0, 4)]
    chunks = chunk_document(doc)
    assert [c.heading_path for c in chunks] == [["退款时限"]]


def test_docx_law_without_heading_styles_uses_plain_article_rule(corpus):
    d = docx.Document()
    d.add_paragraph("中华人民共和国消费者权益保护法（节选）")
    d.add_paragraph("第二十四条　经营者提供的商品或者服务不符合质量要求的，消费者可以依照国家规定退货。")
    d.add_paragraph("第二十五条　经营者采用网络方式销售商品，消费者有权自收到商品之日起七日内退货。")
    path = corpus / "laws" / "cpl.docx"
    d.save(path)
    doc = load_document(path, corpus)
    assert doc.kind == "law" and doc.headings is None
    chunks = chunk_document(doc)
    assert_offsets(doc, chunks)
    arts = {c.article: c for c in chunks if c.article}
    assert set(arts) == {"第二十四条", "第二十五条"}
    assert "七日内退货" in arts["第二十五条"].text


def test_docx_tracked_insertions_and_outline_levels(corpus):
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    d = docx.Document()
    chapter = d.add_paragraph("第二章 消费者的权利")
    chapter._p.get_or_add_pPr().append(parse_xml(f'<w:outlineLvl {w} w:val="1"/>'))
    p = d.add_paragraph("消费者享有")
    p._p.append(parse_xml(f'<w:ins {w} w:id="1" w:author="a" w:date="2024-01-01T00:00:00Z">'
                          '<w:r><w:t xml:space="preserve">依法获得赔偿</w:t></w:r></w:ins>'))
    p._p.append(parse_xml(f'<w:del {w} w:id="2" w:author="a" w:date="2024-01-01T00:00:00Z">'
                          '<w:r><w:delText>已删除的文字</w:delText></w:r></w:del>'))
    p.add_run("的权利。")
    path = corpus / "laws" / "tracked.docx"
    d.save(path)
    doc = load_document(path, corpus)
    assert doc.headings == [(2, "第二章 消费者的权利", 0, 10)]
    assert doc.text == "第二章 消费者的权利\n消费者享有依法获得赔偿的权利。"


@pytest.mark.parametrize("kind", ["random", "zip-without-document", "empty-zip-member"])
def test_docx_malformed_is_rejected(corpus, kind):
    path = corpus / "guides" / "bad.docx"
    if kind == "random":
        write(path, os.urandom(1024).replace(b"\x00", b"\x01"))
    else:
        with zipfile.ZipFile(path, "w") as z:
            if kind == "zip-without-document":
                z.writestr("hello.txt", "not a word file")
            else:
                z.writestr("[Content_Types].xml", "<not-xml")
    with raises_naming("guides/bad.docx") as info:
        load_document(path, corpus)
    assert str(info.value) == "guides/bad.docx: DOCX 文件损坏，无法读取"


# --------------------------------------------------------------------------- HTML

HTML_GUIDE = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
  <meta charset="utf-8">
  <title>京东售后 &amp; 退换货指南</title>
  <style>.x { color: red } /* 样式不应出现 */</style>
  <script>var secret = "脚本不应出现";</script>
</head>
<body>
  <noscript>请启用JavaScript</noscript>
  <template><p>模板内容不应出现</p></template>
  <h1>京东售后指南</h1>
  <p>本页介绍
     退换货流程。</p>
  <h2>一、退货</h2>
  <p>签收后<b>七天</b>内可申请&nbsp;无理由退货。<br>特殊商品除外。</p>
  <h3>1.1 运费</h3>
  <ul><li>质量问题：商家承担</li><li>无理由：买家承担</li></ul>
  <table><tr><th>类型</th><th>时限</th></tr><tr><td>换货</td><td>15天</td></tr></table>
  <h2>二、<em>维修</em></h2>
  <div>保修期内免费维修。</div>
  <script type="text/javascript">document.write("另一段脚本")</script>
  <svg><title>图标标题</title><text>图标文字</text></svg>
</body>
</html>
"""


def test_html_text_title_and_heading_paths(corpus):
    path = write(corpus / "guides" / "jd.html", HTML_GUIDE)
    doc = load_document(path, corpus)
    assert doc.title == "京东售后 & 退换货指南"
    assert doc.kind == "guide"
    for hidden in ("color", "样式", "脚本", "secret", "JavaScript", "模板", "图标", "另一段"):
        assert hidden not in doc.text
    assert "本页介绍退换货流程。" in doc.text  # source line break inside Chinese text is not a space
    assert "签收后七天内可申请 无理由退货。\n特殊商品除外。" in doc.text
    assert "质量问题：商家承担\n无理由：买家承担" in doc.text
    assert "类型 | 时限\n换货 | 15天" in doc.text
    titles = [(lv, t) for lv, t, _, _ in doc.headings]
    assert titles == [(1, "京东售后指南"), (2, "一、退货"), (3, "1.1 运费"), (2, "二、维修")]
    for lv, t, hs, bs in doc.headings:
        assert doc.text[hs:bs] == t
        assert hs == 0 or doc.text[hs - 1] == "\n"
        assert bs == len(doc.text) or doc.text[bs] == "\n"

    chunks = chunk_document(doc)
    assert_offsets(doc, chunks)
    sections = by_section(chunks)
    assert sections["1.1 运费"].heading_path == ["京东售后指南", "一、退货", "1.1 运费"]
    assert "15天" in sections["1.1 运费"].text
    assert sections["二、维修"].heading_path == ["京东售后指南", "二、维修"]
    assert sections["二、维修"].text == "保修期内免费维修。"
    assert sections["一、退货"].text.startswith("签收后")


def test_html_title_falls_back_to_h1_then_file_name(corpus):
    p1 = write(corpus / "guides" / "a.html", "<html><body><h1>拼多多退款说明</h1><p>内容</p></body></html>")
    doc = load_document(p1, corpus)
    assert doc.title == "拼多多退款说明"
    # h1 equal to the title is left out of heading paths
    assert [c.heading_path for c in chunk_document(doc)] == [[]]
    p2 = write(corpus / "guides" / "taobao_refund-faq.htm", "<p>只有正文</p>")
    doc2 = load_document(p2, corpus)
    assert doc2.title == "taobao refund faq"
    assert doc2.text == "只有正文"


def test_html_gbk_with_meta_charset(corpus):
    html = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312">'
            "<title>三包规定</title></head><body><h2>包修期</h2><p>家用汽车产品包修期不低于3年或者行驶里程60000公里。</p>"
            "</body></html>")
    path = write(corpus / "laws" / "sanbao.html", html.encode("gbk"))
    doc = load_document(path, corpus)
    assert doc.kind == "law"
    assert doc.title == "三包规定"
    assert "家用汽车产品包修期不低于3年" in doc.text
    assert [c.heading_path for c in chunk_document(doc)] == [["包修期"]]


def test_html_mislabelled_utf8_still_decodes(corpus):
    html = '<meta charset="gbk"><title>退货</title><p>七日无理由退货</p>'
    path = write(corpus / "guides" / "m.html", html.encode("utf-8"))
    assert load_document(path, corpus).text == "七日无理由退货"


def test_html_declared_western_charset(corpus):
    html = '<meta charset="windows-1252"><title>Café</title><p>Retour gratuit sous 14 jours – reçu</p>'
    path = write(corpus / "guides" / "fr.html", html.encode("cp1252"))
    doc = load_document(path, corpus)
    assert doc.title == "Café" and "reçu" in doc.text


def test_html_undecodable_is_rejected(corpus):
    html = "<p>" + "これは日本語のテキストです。ひらがな。" * 5 + "</p>"
    path = write(corpus / "guides" / "jp.html", html.encode("euc_jp"))
    with raises_naming("guides/jp.html", "编码"):
        load_document(path, corpus)


def test_html_law_without_headings_uses_plain_article_rule(corpus):
    html = """<html><head><title>网络交易监督管理办法</title></head><body>
    <p>　　第一条&nbsp;&nbsp;为了规范网络交易活动，制定本办法。</p>
    <p>　　第二条　在中华人民共和国境内，通过互联网等信息网络销售商品，适用本办法。</p>
    <div>第三条 网络交易经营者不得违反法律。</div>
    </body></html>"""
    path = write(corpus / "laws" / "otsm.html", html)
    doc = load_document(path, corpus)
    assert doc.headings is None
    chunks = chunk_document(doc)
    assert_offsets(doc, chunks)
    assert [c.article for c in chunks] == ["第一条", "第二条", "第三条"]
    assert chunks[0].text == "为了规范网络交易活动，制定本办法。"


def test_html_law_with_chapter_headings_keeps_articles(corpus):
    html = """<title>产品质量法</title><h1>产品质量法</h1>
    <h2>第一章 总则</h2><p>第一条　为了加强对产品质量的监督管理，制定本法。</p>
    <p>第二条　在中华人民共和国境内从事产品生产、销售活动，必须遵守本法。</p>
    <h2>第四章 损害赔偿</h2><p>第四十条　售出的产品有下列情形之一的，销售者应当负责修理、更换、退货。</p>"""
    path = write(corpus / "laws" / "pql.html", html)
    doc = load_document(path, corpus)
    chunks = chunk_document(doc)
    assert_offsets(doc, chunks)
    arts = {c.article: c for c in chunks if c.article}
    assert set(arts) == {"第一条", "第二条", "第四十条"}
    assert arts["第四十条"].heading_path == ["第四章 损害赔偿", "第四十条"]
    assert arts["第二条"].heading_path == ["第一章 总则", "第二条"]
    assert arts["第一条"].text == "为了加强对产品质量的监督管理，制定本法。"


def test_html_binary_is_rejected(corpus):
    path = write(corpus / "guides" / "bin.html", b"\x00\x01\x02<html>" * 50)
    with raises_naming("guides/bin.html", "二进制"):
        load_document(path, corpus)


def test_html_with_only_scripts_has_no_text(corpus):
    path = write(corpus / "guides" / "empty.html", "<html><head><title>空</title><script>x()</script></head><body> </body></html>")
    with raises_naming("guides/empty.html", "没有可索引的文字"):
        load_document(path, corpus)


# --------------------------------------------------------------------------- misc


def test_unsupported_suffix(tmp_path):
    with raises_naming("guides/x.rtf", "不支持"):
        load_rich_document(tmp_path / "x.rtf", "guides/x.rtf")


def test_discover_lists_rich_formats(corpus):
    write(corpus / "laws" / "a.pdf", make_pdf([["第一条　测试"]]))
    make_docx(corpus / "guides" / "b.docx")
    write(corpus / "guides" / "c.HTML", "<p>x</p>")
    write(corpus / "guides" / "d.htm", "<p>x</p>")
    write(corpus / "guides" / "e.doc", b"old word")
    names = [p.relative_to(corpus).as_posix() for p in discover(corpus)]
    assert names == ["guides/b.docx", "guides/c.HTML", "guides/d.htm", "laws/a.pdf"]
