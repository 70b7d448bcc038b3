import json
import subprocess
import sys

import pytest


def rag(*args, input=None):
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True,
                          input=input, timeout=300)


def kb_args(settings):
    return ["--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]


def test_ask_json_prints_the_contract(shipped_settings):
    r = rag("ask", "网上买的衣服不喜欢能退吗", "--json", *kb_args(shipped_settings))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"id", "question", "answer", "refused", "citations", "retrieved", "timings_ms"} <= set(out)
    assert "Traceback" not in r.stderr


def test_ask_text_shows_answer_and_sources(shipped_settings):
    r = rag("ask", "买到假货怎么赔偿", *kb_args(shipped_settings))
    assert r.returncode == 0, r.stderr
    assert "来源：" in r.stdout and "[1] 《" in r.stdout


def test_batch_writes_one_json_line_per_question(shipped_settings, tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [
        {"id": "a", "question": "快递丢了谁赔", "extra": 1},
        {"id": "b", "question": "红烧肉怎么做"},
        {"id": "c", "question": "   "},
    ]), encoding="utf-8")
    r = rag("ask", "--batch", str(f), "--json", *kb_args(shipped_settings))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["id"] for x in lines] == ["a", "b", "c"]
    assert lines[1]["refused"] is True
    assert "error" in lines[2]


@pytest.mark.parametrize("question,expected", [("", "问题不能为空"), ("问" * 10000, "问题太长")])
def test_bad_questions_exit_nonzero_with_chinese_message(shipped_settings, question, expected):
    r = rag("ask", question, *kb_args(shipped_settings))
    assert r.returncode != 0
    assert expected in r.stderr and "Traceback" not in r.stderr


def test_missing_index_exits_nonzero_and_says_to_build(tmp_path):
    r = rag("ask", "退货", "--index", str(tmp_path / "none"))
    assert r.returncode != 0 and "rag index" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_index_exits_nonzero_with_message(writable_kb):
    from rag.index import current_version

    (current_version(writable_kb.index_dir) / "manifest.json").write_text("{broken")
    r = rag("ask", "退货", *kb_args(writable_kb))
    assert r.returncode != 0 and "损坏" in r.stderr and "Traceback" not in r.stderr


def test_index_of_folder_without_documents_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    r = rag("index", "--corpus", str(tmp_path / "empty"), "--index", str(tmp_path / "idx"))
    assert r.returncode != 0 and "没有可索引的文档" in r.stderr and "Traceback" not in r.stderr


def test_index_prints_a_summary(writable_kb):
    r = rag("index", *kb_args(writable_kb))
    assert r.returncode == 0, r.stderr
    assert "复用向量" in r.stderr
