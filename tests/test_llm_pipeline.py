"""The LLM path end to end: the real assistant and index, a real local OpenAI-compatible server."""
import json
import os
import subprocess
import sys

import pytest

from fake_openai_server import FakeOpenAI
from rag.llm import LLMConfig
from rag.pipeline import Assistant


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def llm_assistant(shipped_settings, server):
    return Assistant(shipped_settings, llm=LLMConfig(base_url=server.url, model="qwen-test", timeout_s=3))


def test_llm_answer_cites_retrieved_passages(llm_assistant, server):
    probe = llm_assistant.ask("快递丢了谁赔")
    top = probe["retrieved"][0]["text"]
    sentence = top.split("。")[0]
    server.reply(f"{sentence}[1]。")
    r = llm_assistant.ask("快递丢了谁赔", use_llm=True)
    assert r["llm"]["used"] is True and r["llm"]["supported"] == r["llm"]["total"] == 1
    assert r["answer"].startswith(sentence)
    assert [c["n"] for c in r["citations"]] == [1]
    assert r["citations"][0]["text"] == r["retrieved"][0]["text"]
    sent = server.requests[-1]["json"]["messages"]
    assert any(top[:20] in m["content"] for m in sent)


def test_refused_question_never_reaches_the_llm(llm_assistant, server):
    r = llm_assistant.ask("红烧肉怎么做才好吃", use_llm=True)
    assert r["refused"] is True
    assert server.requests == []


def test_llm_failure_gives_the_extractive_answer_with_a_notice(llm_assistant, server):
    server.reply(status=500)
    r = llm_assistant.ask("快递丢了谁赔", use_llm=True)
    plain = llm_assistant.ask("快递丢了谁赔")
    assert r["llm"]["used"] is False and r["llm"]["notice"]
    assert r["answer"].endswith(plain["answer"]) and r["llm"]["notice"] in r["answer"]
    assert r["citations"] == plain["citations"]


def test_cli_llm_flag_uses_the_configured_server(shipped_settings, server):
    probe = Assistant(shipped_settings).ask("快递丢了谁赔")
    server.reply(probe["retrieved"][0]["text"].split("。")[0] + "[1]。")
    env = dict(os.environ, RAG_LLM_BASE_URL=server.url, RAG_LLM_MODEL="qwen-test", RAG_LLM_API_KEY="sk-secret-123")
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "快递丢了谁赔", "--llm", "--json",
                        "--corpus", str(shipped_settings.corpus_dir), "--index", str(shipped_settings.index_dir)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["llm"]["used"] is True
    assert "sk-secret-123" not in r.stdout + r.stderr
    assert server.requests[-1]["headers"].get("Authorization") == "Bearer sk-secret-123"


def test_cli_llm_flag_without_configuration_is_a_clear_error(shipped_settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_LLM_")}
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "退货", "--llm",
                        "--index", str(shipped_settings.index_dir)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "未配置大模型" in r.stderr
