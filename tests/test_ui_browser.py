"""The web app in a real browser (headless Chromium via Playwright), plus its HTML/upload helpers.

One app is started for the whole module (startup loads the model, and the
machine has two cores) on a private copy of the corpus and index; the tests
run in file order and share one browser page, like a user working through a
session: ask, follow up, get a refusal, upload, break an upload, delete.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import free_port
from rag.config import Settings
from ui import kb, render

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
OUT_OF_DOMAIN = "如何学习 Python 编程？"  # far below the refusal threshold (confidence ~0.26)
MAX_FILE_BYTES = 200_000  # small limit so that "too big" can be tested without a 20 MB upload

NEW_DOC_NAME = "ziteng-yuncang-rules.md"
NEW_DOC = """---
title: 紫藤云仓会员售后规则
kind: guide
---
# 紫藤云仓会员售后规则

## 紫藤云仓会员退货期限

紫藤云仓会员在签收商品后十五日内可以申请紫藤云仓专属退货。紫藤云仓会员退货的运费由紫藤云仓平台承担。

## 紫藤云仓积分返还

紫藤云仓会员退货成功后，购物时使用的紫藤云仓积分在三个工作日内返还到会员账户。
"""
XSS_DOC_NAME = "feicui-parrot-xss.md"
XSS_DOC = """---
title: 翡翠鹦鹉<script>window.__pwned=1</script>饲料售后说明
kind: guide
---
# 翡翠鹦鹉<img src=x onerror="window.__pwned=2">饲料售后说明

## 翡翠鹦鹉饲料袋破损怎么办

购买翡翠鹦鹉牌饲料时，如果收到的饲料袋破损，请在签收后四十八小时内拍照联系卖家。<script>window.__pwned=3</script>卖家应当补发新的翡翠鹦鹉饲料袋。<img src=x onerror="window.__pwned=4"><svg onload="window.__pwned=6"></svg>

[点我](javascript:window.__pwned=5) **加粗** $$x^2$$
"""


# ---------------------------------------------------------------------------------------------
# Helpers that need no browser
# ---------------------------------------------------------------------------------------------

def test_render_escapes_document_text_and_links_citations():
    p = {"n": 2, "source": "uploads/<b>x.md", "title": "标题<script>alert(1)</script>", "kind": "law",
         "section": "第一条<img src=x onerror=alert(1)>", "text": "甲。<script>x()</script>乙。\n\n丙",
         "start": 0, "end": 10, "score": 0.5, "used_sentences": [[0, 2]]}
    result = {"answer": "法律依据：\n- 依《标题》第一条：甲。[2] 还有[9]", "refused": False, "citations": [p],
              "retrieved": [p], "confidence": 0.9, "index_version": "v-1", "timings_ms": {"total": 3}}
    out = render.answer_html(result, "t1", show_scores=True)
    assert "<script" not in out and "<img" not in out and "<b>" not in out
    assert "&lt;script&gt;" in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert '<a class="cite-ref" href="#c-t1-2"' in out and 'id="c-t1-2"' in out
    assert "[9]" in out and "#c-t1-9" not in out  # a marker without a card stays plain text
    assert '<mark class="used">甲。</mark>' in out
    assert "\n" not in out  # one raw HTML block for the chatbot's Markdown renderer
    assert "法律依据" in out and "badge-law" in out


def test_render_refusal_offers_three_closest_passages():
    near = [{"n": i, "source": f"s{i}.md", "title": f"T{i}", "kind": "guide", "section": "正文", "text": "x",
             "start": 0, "end": 1, "score": 0.1} for i in range(1, 6)]
    out = render.answer_html({"answer": "资料中没有找到能回答这个问题的依据。", "refused": True, "citations": [],
                              "retrieved": near}, "t2")
    assert "资料中没有找到" in out and "可能相关" in out
    assert out.count('class="cite-card') == 3 and "经验指南（未经核实）" in out


@pytest.mark.parametrize("name", ["../../x.md", "..", "a/b.md", "a\\b.md", "/etc/passwd.md", ".hidden.md",
                                  "x.exe", "noext", "", "README.md", "bad\x00name.md", "x..md"])
def test_upload_names_are_sanitized(name):
    with pytest.raises(kb.UploadRejected):
        kb.safe_name(name)


def test_upload_name_keeps_plain_chinese_name():
    assert kb.safe_name("七日无理由 退货说明(2).md") == "七日无理由 退货说明(2).md"


def test_delete_refuses_paths_outside_corpus(tmp_path):
    s = Settings().with_(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "outside.md").write_text("# x\n\n内容", encoding="utf-8")
    with pytest.raises(kb.UploadRejected):
        kb.resolve_in_corpus(s, "../outside.md")
    assert (tmp_path / "outside.md").exists()


# ---------------------------------------------------------------------------------------------
# The app in a browser
# ---------------------------------------------------------------------------------------------

def test_starting_the_app_answers_a_warm_up_question(shipped_settings):
    import subprocess
    import sys

    # jieba's dictionary and the encoder load at start, not on the first shopper's question.
    code = ("import jieba; from rag.config import Settings; from ui.app import build_app; "
            f"demo = build_app(Settings().with_(index_dir={str(shipped_settings.index_dir)!r})); "
            "print(jieba.dt.initialized, demo.rag_app._assistant is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    assert out.stdout.split()[-2:] == ["True", "True"], out.stdout + out.stderr


@pytest.fixture(scope="module")
def kb_settings(shipped_settings, tmp_path_factory) -> Settings:
    """Like conftest's ``writable_kb``, but one copy for the whole module (one app start)."""
    root = tmp_path_factory.mktemp("ui-kb")
    shutil.copytree(shipped_settings.corpus_dir, root / "corpus")
    shutil.copytree(shipped_settings.index_dir, root / "index", ignore=shutil.ignore_patterns(".lock"))
    return shipped_settings.with_(corpus_dir=root / "corpus", index_dir=root / "index",
                                  max_file_bytes=MAX_FILE_BYTES)


@pytest.fixture(scope="module")
def app_url(kb_settings):
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (make browser installs it)")
    from ui.app import launch

    port = free_port()
    demo = launch(kb_settings, host="127.0.0.1", port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        dialogs = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        pg.dialogs = dialogs
        pg.goto(app_url)
        pg.wait_for_selector("#question textarea")
        yield pg
        context.close()
        browser.close()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _answers(page):
    return page.locator("#chat .rag-answer")


def _ask(page, question: str | None = None, *, via=None, timeout: float = 90_000):
    """Send a question (typed, or by clicking ``via``) and return the new answer's locator."""
    _tab(page, "提问")
    before = _answers(page).count()
    if via is None:
        page.fill("#question textarea", question)
        page.click("#send")
    else:
        via.click()
    page.wait_for_function(
        f"document.querySelectorAll('#chat .rag-answer').length > {before}"
        " || !!document.querySelector('#ask-status .warn')", timeout=timeout)
    assert _answers(page).count() > before, "no answer: " + page.inner_text("#ask-status")
    page.wait_for_function("!document.querySelector('#ask-status').innerText.includes('正在查找')")
    page.wait_for_timeout(300)  # let the chatbot finish rendering the message
    return _answers(page).nth(before)


def _upload(page, files: list[dict]) -> str:
    """Upload through the knowledge-base tab; returns the status text once the handler finished."""
    from playwright.sync_api import expect

    _tab(page, "知识库")
    page.locator("#upload input[type=file]").set_input_files(files)
    for f in files:  # wait until Gradio has uploaded every file before asking the server to use them
        expect(page.locator("#upload")).to_contain_text(Path(f["name"]).stem, timeout=20_000)
    page.click("#upload-btn")
    # every outcome line names its file: "已加入：uploads/x.md" or "未加入：x.md：why"
    expect(page.locator("#kb-status")).to_contain_text(files[0]["name"], timeout=180_000)
    return page.inner_text("#kb-status")


def _md(name: str, text: str) -> dict:
    return {"name": name, "mimeType": "text/markdown", "buffer": text.encode("utf-8")}


def test_answer_shows_key_point_basis_and_steps_with_both_badges(page, output_dir):
    ans = _ask(page, "淘宝买的杯子到手就碎了，商家不认怎么办？")
    key = ans.locator(".ans-key")
    assert key.count() == 1 and "要点" in key.inner_text() and "运输" in key.inner_text()
    assert ans.locator(".ans-h-steps").inner_text() == "怎么做："
    assert ans.locator(".ans-step").count() >= 2
    assert ans.locator(".badge-howto").count() >= 1 and ans.locator(".badge-law").count() >= 1
    assert "食品" not in ans.locator(".cite-card .card-title").all_inner_texts().__str__()
    page.evaluate("[...document.querySelectorAll('#chat .rag-question')].pop().scrollIntoView({block: 'start'});"
                  "window.scrollTo(0, 0)")
    page.screenshot(path=str(output_dir / "answer_shape.png"))


def test_ask_shows_answer_with_citations_and_law_badge(page, output_dir):
    from playwright.sync_api import expect

    ans = _ask(page, "网上买的衣服不喜欢，7天内能无理由退货吗？")
    assert "资料中没有找到" not in ans.inner_text()
    assert re.search(r"\[1\]", ans.locator(".ans-text").inner_text())
    assert ans.locator("a.cite-ref").count() >= 1
    assert ans.locator(".cite-card").count() >= 1
    badges = ans.locator(".badge-law")
    assert badges.count() >= 1 and badges.first.inner_text() == "法律依据"
    assert "《" in ans.locator(".cite-card .card-title").first.inner_text()
    assert ans.locator(".cite-card mark.used").count() >= 1  # quoted sentences highlighted
    details = ans.locator(".cite-card details.card-full").first
    details.locator("summary").click()  # the whole article opens
    expect(details.locator(".card-full-text")).to_be_visible()
    page.evaluate("[...document.querySelectorAll('#chat .rag-question')].pop().scrollIntoView({block: 'start'});"
                  "window.scrollTo(0, 0)")  # scroll the chat box, not the page
    page.screenshot(path=str(output_dir / "ask_tab.png"))


def test_clicking_citation_brings_its_card_into_view(page):
    from playwright.sync_api import expect

    ans = _answers(page).last
    link = ans.locator("a.cite-ref").last
    target = link.get_attribute("href").lstrip("#")
    card = page.locator(f"[id='{target}']")
    assert card.count() == 1
    # start from the top of the chat so the card is (usually) out of view, then click its marker
    page.evaluate("document.querySelectorAll('#chat *').forEach(e => { if (e.scrollHeight > e.clientHeight) e.scrollTop = 0; })")
    link.scroll_into_view_if_needed()
    url = page.url
    link.click()
    expect(card).to_be_in_viewport(timeout=5_000)
    assert page.url.split("#")[0] == url.split("#")[0]  # no navigation away from the app


def test_follow_up_question_and_example_buttons(page):
    example = page.locator("button.example-q", has_text="快递丢件了")
    ans = _ask(page, via=example)
    assert _answers(page).count() >= 2
    assert ans.locator(".cite-card").count() >= 1
    ids = page.eval_on_selector_all("#chat .cite-card", "els => els.map(e => e.id)")
    assert len(ids) == len(set(ids)), "card ids must be unique across answers"
    refs = page.eval_on_selector_all("#chat a.cite-ref", "els => els.map(e => e.getAttribute('href').slice(1))")
    assert set(refs) <= set(ids)


def test_out_of_domain_question_is_refused_with_closest_passages(page):
    ans = _ask(page, OUT_OF_DOMAIN)
    text = ans.inner_text()
    assert "资料中没有找到" in text
    assert "可能相关" in text
    assert 1 <= ans.locator(".cite-card").count() <= 3
    assert ans.locator("a.cite-ref").count() == 0


def test_empty_and_too_long_questions_get_a_message(page):
    from playwright.sync_api import expect

    n = _answers(page).count()
    page.fill("#question textarea", "   ")
    page.click("#send")
    expect(page.locator("#ask-status")).to_contain_text("问题不能为空")
    page.fill("#question textarea", "衣服" * 600)
    page.click("#send")
    expect(page.locator("#ask-status")).to_contain_text("问题太长")
    assert _answers(page).count() == n
    assert "Traceback" not in page.inner_text("body")


def test_thumbs_feedback_is_recorded(page, kb_settings):
    from playwright.sync_api import expect

    from rag import feedback

    # the first 👍 rates the first answer on the page, whichever question an earlier test asked
    first_question = page.locator("#chat .rag-question").first.inner_text().strip()
    # Gradio labels the thumbs by locale: 赞/踩 in zh-CN, Like/Dislike otherwise
    page.locator("#chat button[aria-label='赞'], #chat button[aria-label='Like']").first.click()
    expect(page.locator("#ask-status")).to_contain_text("感谢反馈")
    page.locator("#chat button[aria-label='踩'], #chat button[aria-label='Dislike']").last.click()
    expect(page.locator("#ask-status")).to_contain_text("👎")
    rows = feedback.rows(kb_settings)
    assert [r["rating"] for r in rows] == ["up", "down"]
    assert rows[0]["question"] == first_question and rows[0]["citations"]
    assert rows[1]["question"] == OUT_OF_DOMAIN


def test_upload_new_document_rebuild_and_answer_cites_it(page, kb_settings, output_dir):
    t0 = time.perf_counter()
    status = _upload(page, [_md(NEW_DOC_NAME, NEW_DOC)])
    took = time.perf_counter() - t0
    assert f"已加入：uploads/{NEW_DOC_NAME}" in status, status
    assert "索引已更新" in status
    assert (kb_settings.corpus_dir / "uploads" / NEW_DOC_NAME).exists()
    table = page.inner_text("#kb-docs")
    assert f"uploads/{NEW_DOC_NAME}" in table and "紫藤云仓会员售后规则" in table
    page.screenshot(path=str(output_dir / "kb_tab.png"), full_page=True)
    print(f"upload + rebuild from the UI took {took:.1f}s")
    ans = _ask(page, "紫藤云仓会员退货要在签收后几天内申请？")
    sources = ans.locator(".cite-card .card-source").all_inner_texts()
    assert f"uploads/{NEW_DOC_NAME}" in sources, sources
    assert "紫藤云仓" in ans.locator(".ans-text").inner_text()


def test_bad_uploads_are_refused_and_index_is_kept(page, kb_settings):
    from rag.index import current_version

    version = current_version(kb_settings.index_dir)
    rows_before = len(kb.document_rows(kb_settings))
    bad = [
        _md("empty.md", ""),
        {"name": "scan.pdf", "mimeType": "application/pdf", "buffer": bytes(range(256)) * 20},
        {"name": "latin1.txt", "mimeType": "text/plain", "buffer": ("café naïve résumé " * 40).encode("latin-1")},
        {"name": "huge.txt", "mimeType": "text/plain", "buffer": ("退货" * (MAX_FILE_BYTES // 3)).encode("utf-8")},
        {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ\x90\x00"},
    ]
    status = _upload(page, bad)
    for f in bad:
        assert f"未加入：{f['name']}" in status, status
    assert "文件是空的" in status and "编码" in status and "太大" in status and "不支持的文件类型" in status
    assert "现有索引保持不变" in status
    assert "Traceback" not in page.inner_text("body")
    assert current_version(kb_settings.index_dir) == version
    assert len(kb.document_rows(kb_settings)) == rows_before
    for f in bad:
        assert not (kb_settings.corpus_dir / "uploads" / f["name"]).exists()


def test_script_in_a_document_does_not_run(page, kb_settings):
    status = _upload(page, [_md(XSS_DOC_NAME, XSS_DOC)])
    assert f"已加入：uploads/{XSS_DOC_NAME}" in status, status
    ans = _ask(page, "翡翠鹦鹉饲料袋破损怎么办？")
    cards = ans.locator(".cite-card", has_text="翡翠鹦鹉")
    assert cards.count() >= 1
    card_text = cards.first.inner_text()
    assert "<script>window.__pwned=1</script>" in card_text  # shown as text
    assert "<img src=x onerror" in card_text
    cards.first.locator("summary").click()
    time.sleep(0.5)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#chat script").count() == 0
    assert page.locator("#chat img[src='x']").count() == 0
    assert page.locator("#chat svg[onload]").count() == 0
    assert page.locator("#chat a[href^='javascript']").count() == 0
    assert page.dialogs == []


def test_delete_document_removes_it_from_index(page, kb_settings):
    from playwright.sync_api import expect

    _tab(page, "知识库")
    page.locator("#delete-choice input").click()
    page.locator("#delete-choice input").fill(XSS_DOC_NAME)
    page.get_by_role("option", name=f"uploads/{XSS_DOC_NAME}").click()
    page.click("#delete-btn")
    expect(page.locator("#kb-status")).to_contain_text(f"已删除：uploads/{XSS_DOC_NAME}", timeout=180_000)
    assert not (kb_settings.corpus_dir / "uploads" / XSS_DOC_NAME).exists()
    assert f"uploads/{XSS_DOC_NAME}" not in page.inner_text("#kb-docs")
    assert f"uploads/{XSS_DOC_NAME}" not in (kb.read_manifest(kb_settings) or {}).get("documents", {})
    ans = _ask(page, "翡翠鹦鹉饲料袋破损怎么办？")
    assert XSS_DOC_NAME not in ans.inner_text()


# ---------------------------------------------------------------------------------------------
# With an administrator password: the ask tab is public, the knowledge-base tab needs a login
# ---------------------------------------------------------------------------------------------

ADMIN_PASSWORD = "kb-admin-2026"


@pytest.fixture(scope="module")
def protected_url(shipped_settings, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (make browser installs it)")
    from conftest import admin_server

    running, _ = admin_server(shipped_settings, tmp_path_factory.mktemp("ui-admin"), ADMIN_PASSWORD)
    yield running.url
    running.close()


def test_knowledge_base_tab_needs_an_administrator_login(protected_url, page, output_dir):
    from playwright.sync_api import expect

    context = page.context.browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    pg = context.new_page()  # a fresh visitor, in the module's browser
    pg.set_default_timeout(30_000)
    pg.goto(protected_url)
    pg.wait_for_selector("#question textarea")
    ans = _ask(pg, "网上买的衣服不喜欢，7天内能无理由退货吗？")  # asking needs no login
    assert ans.locator(".cite-card").count() >= 1
    _tab(pg, "知识库")
    expect(pg.locator("#admin-password input")).to_be_visible()
    for hidden in ("#upload-btn", "#delete-btn", "#rebuild-btn", "#kb-docs"):
        expect(pg.locator(hidden)).to_be_hidden()
    pg.screenshot(path=str(output_dir / "kb_login.png"))
    pg.fill("#admin-password input", "not-the-password")
    pg.click("#login-btn")
    expect(pg.locator("#login-status")).to_contain_text("管理员密码不正确")
    expect(pg.locator("#upload-btn")).to_be_hidden()
    pg.fill("#admin-password input", ADMIN_PASSWORD)
    pg.click("#login-btn")
    expect(pg.locator("#upload-btn")).to_be_visible()
    expect(pg.locator("#kb-docs")).to_contain_text("laws/consumer-protection-law.md")
    expect(pg.locator("#admin-password input")).to_be_hidden()
    pg.click("#logout-btn")
    expect(pg.locator("#admin-password input")).to_be_visible()
    expect(pg.locator("#upload-btn")).to_be_hidden()
    assert "Traceback" not in pg.inner_text("body")
    context.close()
