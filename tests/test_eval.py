"""`rag eval`: clear errors on bad input, the split, the answer metrics, and a recall floor on the dev set."""
import json
import subprocess
import sys

import numpy as np
import pytest

from eval.metrics import acceptable, declines, first_citation, has_steps, score
from eval.run import load_questions
from rag.config import REPO_ROOT
from rag.retrieve import CONFIDENCE_MID, Retriever

QUESTIONS = REPO_ROOT / "eval" / "questions.jsonl"


def rag_eval(*args):
    return subprocess.run([sys.executable, "-m", "rag.cli", "eval", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


@pytest.mark.parametrize("content, words", [(None, "找不到问题文件"), ("{not json\n", "不是合法的 JSON"),
                                            ('["a list"]\n', "JSON 对象"), ('{"id": "x"}\n', "缺少")])
def test_eval_with_a_bad_question_file_exits_2_with_one_chinese_sentence(tmp_path, content, words):
    path = tmp_path / "q.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    r = rag_eval("--questions", str(path))
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr


def test_eval_of_a_directory_exits_2(tmp_path):
    r = rag_eval("--questions", str(tmp_path))
    assert r.returncode == 2 and "文件夹" in r.stderr and "Traceback" not in r.stderr


def test_the_split_is_a_fixed_rule_and_every_question_has_a_part():
    qs = load_questions(QUESTIONS)
    assert {q["split"] for q in qs} == {"tuning", "test"}
    tuning, test = load_questions(QUESTIONS, "tuning"), load_questions(QUESTIONS, "test")
    assert len(tuning) + len(test) == len(qs)
    assert sum(not q["answerable"] and q["category"] == "not_covered" for q in test) >= 15


def p(source, section, text, kind="law", n=1):
    return {"n": n, "source": source, "section": section, "text": text, "kind": kind, "start": 0}


Q = {"id": "a", "answerable": True, "gold": [{"source": "laws/a.md", "evidence": "七日内退货"}], "facts": ["七日"],
     "acceptable": [{"source": "laws/b.md", "section": "第九条"}], "asks_steps": True}


def test_a_cited_passage_is_acceptable_when_gold_listed_or_a_guide_resting_on_the_gold_article():
    articles = {("消费者权益保护法", "第二十五条")}
    assert acceptable(p("laws/a.md", "第二十五条", "可以七日内退货"), Q, articles)
    assert acceptable(p("laws/b.md", "第九条", "x"), Q, articles)
    guide = p("guides/g.md", "能退吗？", "可以（依据：《消费者权益保护法》第二十五条）。", kind="howto")
    assert acceptable(guide, Q, articles)
    other = p("guides/g.md", "能退吗？", "可以（依据：《消费者权益保护法》第二十四条）。", kind="howto")
    assert not acceptable(other, Q, articles)
    assert not acceptable(p("laws/c.md", "第一条", "无关"), Q, articles)


def test_the_first_line_is_judged_by_its_first_marker_and_steps_need_cited_numbered_lines():
    good = p("laws/a.md", "第二十五条", "七日内退货", n=2)
    r = {"answer": "要点：可以退。[2]\n怎么做：\n1. 联系卖家。[1]", "citations": [p("x", "y", "z"), good], "refused": False}
    assert first_citation(r) is good and has_steps(r)
    assert not has_steps({"answer": "要点：可以退。[2]\n怎么做：\n1. 联系卖家。"})


def test_a_named_gap_counts_as_declining_but_an_ordinary_answer_does_not():
    assert declines({"refused": False, "answer": "资料中没有关于『88VIP』的规定；以下是…"})
    assert declines({"refused": True, "answer": "资料中没有找到…"})
    assert not declines({"refused": False, "answer": "要点：…"})


def test_citation_precision_counts_each_citation_and_ignores_refusals():
    hit = p("laws/a.md", "第二十五条", "七日内退货")
    noise = p("laws/z.md", "第一条", "无关", n=2)
    qs = [Q, dict(Q, id="b")]
    results = {"a": {"retrieved": [hit], "citations": [hit, noise], "answer": "要点：七日内退货[1]", "refused": False},
               "b": {"retrieved": [hit], "citations": [], "answer": "资料中没有找到", "refused": True}}
    m = score(qs, results)
    assert m["citation_precision"] == 0.5 and m["first_line_hit"] == 0.5 and m["next_step_presence"] == 0.0


class _Settings:
    typical_questions = True


@pytest.mark.parametrize("raw, expected", [(CONFIDENCE_MID, 0.5), (CONFIDENCE_MID + 0.05, 1.0), (CONFIDENCE_MID - 0.05, 0.0),
                                           (CONFIDENCE_MID + 0.02, 0.7), (0.2, 0.0), (0.999, 1.0)])
def test_confidence_maps_raw_similarity_linearly_around_the_refusal_line_and_clips(raw, expected):
    r = Retriever.__new__(Retriever)
    r.settings = _Settings()
    dense = np.array([raw - 0.02], dtype=np.float32)  # the passage cosine …
    dense_q = np.array([raw + 0.02], dtype=np.float32)  # … and the typical question cosine average to raw
    got = r._confidence(dense, dense_q, np.zeros(1), ["x"], [0], "hybrid", None)
    assert got == pytest.approx(expected, abs=1e-4)


def test_dev_set_recall_at_5_stays_above_its_floor(assistant):
    """A floor, not the target: it catches a retrieval change that breaks the shipped quality."""
    qs = [q for q in load_questions(QUESTIONS) if q["answerable"]]
    results = {q["id"]: assistant.ask(q["question"], qid=q["id"]) for q in qs}
    m = score(qs, results)
    assert m["recall@5"] >= 0.90, json.dumps(m["misses"], ensure_ascii=False)
