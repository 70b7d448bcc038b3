"""The retrieval development set (eval/questions.jsonl) and its validator."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from eval.check_questions import check_questions, main
REPO_ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = REPO_ROOT / "eval" / "questions.jsonl"
CORPUS = REPO_ROOT / "corpus"


def _rows() -> list[dict]:
    with QUESTIONS.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_shipped_question_set_is_valid():
    assert check_questions(QUESTIONS, CORPUS) == []


def test_shipped_question_set_minimum_counts():
    rows = _rows()
    styles = Counter(r["style"] for r in rows)
    assert len(rows) >= 150
    assert sum(1 for r in rows if not r["answerable"]) >= 25
    assert styles["paraphrase"] >= 30
    assert styles["long_story"] >= 15
    assert styles["keywords"] >= 15
    assert styles["formal"] >= 10
    assert styles["typo"] >= 10
    assert styles["mixed_english"] >= 8


def test_shipped_question_set_covers_every_corpus_document():
    cited = {g["source"] for r in _rows() for g in r["gold"]}
    from rag.documents import discover

    documents = {p.relative_to(CORPUS).as_posix() for p in discover(CORPUS)}
    assert documents - cited == set()


# ---------------------------------------------------------------- checker on small fixtures

LAW = """---
title: "示例法"
kind: law
---

# 示例法

## 第一章 总则

### 第一条

消费者有权自收到商品之日起七日内退货。退回商品的运费由消费者承担。

### 第二条

经营者应当在七日内返还价款；逾期的，承担利息。
"""


def _good(**changes) -> dict:
    rec = {
        "id": "q001",
        "question": "不想要了能退吗？",
        "answerable": True,
        "category": "七日无理由退货",
        "style": "colloquial",
        "gold": [{"source": "laws/demo.md", "evidence": "自收到商品之日起七日内退货"}],
        "facts": ["七日内", "运费"],
    }
    rec.update(changes)
    return rec


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "laws").mkdir(parents=True)
    (root / "laws" / "demo.md").write_text(LAW, encoding="utf-8")
    return root


def _write(tmp_path: Path, *records) -> Path:
    path = tmp_path / "questions.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_checker_accepts_a_good_line(tmp_path, corpus):
    unanswerable = _good(
        id="q002", question="红烧肉怎么做？", answerable=False, category="out_of_scope",
        style="unanswerable", gold=[], facts=[],
    )
    assert check_questions(_write(tmp_path, _good(), unanswerable), corpus) == []


def test_checker_catches_evidence_not_in_file(tmp_path, corpus):
    bad = _good(gold=[{"source": "laws/demo.md", "evidence": "自收到商品之日起十五日内退货"}])
    problems = check_questions(_write(tmp_path, bad), corpus)
    assert len(problems) == 1 and "找不到" in problems[0]


def test_checker_catches_question_containing_its_evidence(tmp_path, corpus):
    bad = _good(question="是不是自收到商品之日起七日内退货？")
    problems = check_questions(_write(tmp_path, bad), corpus)
    assert len(problems) == 1 and "包含了 evidence" in problems[0]


def test_checker_catches_fact_outside_the_passage(tmp_path, corpus):
    # "利息" is in the file, but in 第二条, not in 第一条 where the evidence is
    bad = _good(facts=["七日内", "利息"])
    problems = check_questions(_write(tmp_path, bad), corpus)
    assert len(problems) == 1 and "利息" in problems[0] and "gold 段落" in problems[0]


def test_checker_catches_evidence_across_sentences_and_front_matter(tmp_path, corpus):
    across = _good(gold=[{"source": "laws/demo.md", "evidence": "七日内退货。退回商品的运费"}])
    front = _good(id="q002", gold=[{"source": "laws/demo.md", "evidence": "title: \"示例法\""}])
    problems = check_questions(_write(tmp_path, across, front), corpus)
    assert any("跨句" in p for p in problems)
    assert any("q002" in p and "找不到" in p for p in problems)


def test_checker_catches_structural_problems(tmp_path, corpus):
    missing_file = _good(id="q002", gold=[{"source": "laws/nope.md", "evidence": "自收到商品之日起七日内退货"}])
    unanswerable_with_gold = _good(id="q003", answerable=False, style="unanswerable", category="not_covered")
    wrong_style = _good(id="q004", style="shouting")
    problems = check_questions(
        _write(tmp_path, _good(), _good(), missing_file, unanswerable_with_gold, wrong_style, "{not json"),
        corpus,
    )
    text = "\n".join(problems)
    assert "重复" in text  # duplicate id q001
    assert "不存在" in text  # missing source file
    assert "gold 必须为 []" in text and "facts 必须为 []" in text
    assert "shouting" in text
    assert "JSON" in text


def test_cli_exit_codes(tmp_path, corpus, capsys):
    good = _write(tmp_path, _good())
    assert main([str(good), "--corpus", str(corpus)]) == 0
    assert "OK 1 questions" in capsys.readouterr().out
    bad = _write(tmp_path, _good(facts=["利息"]))
    assert main([str(bad), "--corpus", str(corpus)]) == 1
