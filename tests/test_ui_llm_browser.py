"""The web app with an LLM configured: a real local OpenAI-compatible server streams the answer,
the page shows it with verified citations (Chromium via Playwright)."""
from __future__ import annotations

import shutil

import pytest

from conftest import free_port
from fake_openai_server import FakeOpenAI
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, _answers

QUESTION = "快递把我的包裹弄丢了，谁来赔？"


@pytest.fixture(scope="module")
def llm_app(shipped_settings, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (make browser installs it)")
    from rag.llm import LLMConfig
    from rag.pipeline import Assistant
    from ui.app import launch

    root = tmp_path_factory.mktemp("ui-llm")
    shutil.copytree(shipped_settings.index_dir, root / "index", ignore=shutil.ignore_patterns(".lock"))
    settings = shipped_settings.with_(index_dir=root / "index")
    with FakeOpenAI() as server:
        mp = pytest.MonkeyPatch()
        mp.setenv("RAG_LLM_BASE_URL", server.url)
        mp.setenv("RAG_LLM_MODEL", "qwen-local-test")
        mp.setenv("RAG_LLM_API_KEY", "sk-ui-secret")
        top = Assistant(settings, llm=LLMConfig(base_url=server.url, model="x")).ask(QUESTION)["retrieved"]
        port = free_port()
        demo = launch(settings, host="127.0.0.1", port=port, block=False)
        yield f"http://127.0.0.1:{port}/", server, top
        demo.close()
        mp.undo()


def test_llm_answer_streams_into_the_page_with_verified_citations(llm_app, output_dir):
    from playwright.sync_api import sync_playwright

    url, server, top = llm_app
    first = top[0]["text"].split("。")[0]
    server.reply(f"根据资料，{first}[1]。另外，商家会送您一张优惠券[2]。", token_delay=0.02)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#question textarea")
        page.get_by_text("设置").click()
        page.locator("#use-llm input[type=checkbox]").check()
        page.fill("#question textarea", QUESTION)
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('#chat .rag-answer').length > 0")
        page.wait_for_timeout(500)
        ans = _answers(page).last
        text = ans.inner_text()
        assert "由大模型 qwen-local-test 撰写" in text and "1/2 句已在资料中核实" in text
        assert "未在资料中找到依据" in text  # the invented coupon sentence is flagged, not passed off
        assert ans.locator(".cite-card").count() >= 1
        assert "sk-ui-secret" not in page.content()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(output_dir / "llm_answer.png"))
        browser.close()
    assert server.requests and server.requests[-1]["json"]["stream"] is True
