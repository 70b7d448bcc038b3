"""Hand-computed metrics on tiny fixtures."""
import math

import pytest

from eval.metrics import first_hit_rank, matches, ndcg_at, percentile, score

G = {"source": "laws/a.md", "evidence": "七日内退货"}


def p(source, text, start=0):
    return {"source": source, "text": text, "start": start}


def test_hit_needs_same_source_and_evidence_ignoring_whitespace():
    assert matches(p("laws/a.md", "消费者有权自收到商品之日起七日\n内退货"), G)
    assert not matches(p("laws/b.md", "七日内退货"), G)
    assert not matches(p("laws/a.md", "十五日内退货"), G)


def test_first_hit_rank_is_one_based_and_none_when_missing():
    retrieved = [p("laws/x.md", "无关"), p("laws/a.md", "七日内退货")]
    assert first_hit_rank(retrieved, [G]) == 2
    assert first_hit_rank(retrieved[:1], [G]) is None


def test_ndcg_with_two_golds_found_at_ranks_1_and_3():
    g2 = {"source": "laws/b.md", "evidence": "赔偿损失"}
    retrieved = [p("laws/a.md", "七日内退货"), p("laws/x.md", "无关"), p("laws/b.md", "应当赔偿损失")]
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at(retrieved, [G, g2]) == pytest.approx(expected)


def test_ndcg_does_not_credit_one_gold_twice():
    retrieved = [p("laws/a.md", "七日内退货"), p("laws/a.md", "七日内退货")]
    assert ndcg_at(retrieved, [G]) == pytest.approx(1.0)


def test_percentile_nearest_rank():
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10
    assert percentile([1, 2, 3, 4], 50) == 2


def test_an_answerable_question_told_the_sources_lack_something_counts_as_a_gap_not_a_refusal():
    qs = [{"id": "a", "answerable": True, "style": "s", "category": "c", "gold": [G], "facts": []},
          {"id": "b", "answerable": True, "style": "s", "category": "c", "gold": [G], "facts": []}]
    hit = p("laws/a.md", "七日内退货")
    results = {"a": {"retrieved": [hit], "citations": [hit], "answer": "资料中没有关于『88VIP』的规定；以下是…[1]",
                     "refused": False, "timings_ms": {"total": 1}},
               "b": {"retrieved": [hit], "citations": [hit], "answer": "要点：七日内退货[1]", "refused": False,
                     "timings_ms": {"total": 1}}}
    m = score(qs, results)
    assert m["gap_on_answerable"] == 0.5 and m["false_refusal"] == 0.0


def test_score_recall_mrr_and_answer_metrics():
    qs = [
        {"id": "a", "answerable": True, "style": "s", "category": "c", "gold": [G], "facts": ["七日"]},
        {"id": "b", "answerable": True, "style": "s", "category": "c", "gold": [G], "facts": ["十日"]},
        {"id": "u", "answerable": False, "style": "unanswerable", "category": "x", "gold": [], "facts": []},
    ]
    hit = p("laws/a.md", "七日内退货")
    miss = p("laws/x.md", "无关", 5)
    results = {
        "a": {"retrieved": [hit], "citations": [hit], "answer": "七日内退货[1]", "refused": False, "timings_ms": {"total": 10}},
        "b": {"retrieved": [miss, miss, hit], "citations": [], "answer": "", "refused": True, "timings_ms": {"total": 30}},
        "u": {"retrieved": [miss], "citations": [], "answer": "", "refused": True, "timings_ms": {"total": 20}},
    }
    m = score(qs, results)
    assert m["recall@1"] == 0.5 and m["recall@3"] == 1.0
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["citation_hit"] == 0.5 and m["fact_coverage"] == 0.5
    assert m["false_refusal"] == 0.5 and m["refusal_unanswerable"] == 1.0
    assert m["latency_p50_ms"] == 20
    assert m["gap_on_answerable"] == 0.0
    assert m["by_style"]["s"] == (1.0, 2)
    assert m["citations_in_retrieved"] is True
