"""The console's back end without a browser: annotations (rag/annotate.py: the YAML edited as text,
the index updated incrementally), retrieval testing (rag/hittest.py) and grouping of unanswered
questions (rag/unresolved.py)."""
from __future__ import annotations

import time

import pytest
import yaml

from rag import annotate

LAW_YAML = """# Typical shopper questions for 某法; indexed beside the article text. Written from the law text only.
第二条:
  - 我自己买东西用，受不受保护？
  # a reviewer's note inside a list
  - 买来自己用的东西出了问题怎么办？
第四条:
  - 店家不讲诚信怎么办？

第九条:
  - 能不能自己挑？
"""


def test_insert_keeps_comments_and_layout():
    out = annotate.insert_question(LAW_YAML, "第二条", "自用的东西坏了能维权吗", date="2026-12-01")
    lines = out.splitlines()
    i = lines.index("  - 自用的东西坏了能维权吗  # 后台标注 2026-12-01")
    assert lines[i - 1] == "  - 买来自己用的东西出了问题怎么办？" and lines[i + 1] == "第四条:"
    assert out.replace("  - 自用的东西坏了能维权吗  # 后台标注 2026-12-01\n", "") == LAW_YAML
    data = yaml.safe_load(out)
    assert data["第二条"][-1] == "自用的东西坏了能维权吗" and data["第九条"] == ["能不能自己挑？"]


def test_new_section_goes_where_the_document_has_it():
    order = ["第一条", "第二条", "第四条", "第七条", "第九条", "第十条"]
    out = annotate.insert_question(LAW_YAML, "第七条", "商家不安全伤到我了", order=order, date="2026-12-01")
    lines = out.splitlines()
    assert lines.index("第七条:") > lines.index("第四条:") and lines.index("第七条:") < lines.index("第九条:")
    out = annotate.insert_question(LAW_YAML, "第十条", "强买强卖合法吗", order=order, date="2026-12-01")
    assert out.endswith("第十条:\n  - 强买强卖合法吗  # 后台标注 2026-12-01\n")
    guide = annotate.insert_question("", "网上买的东西不想要了，能退吗？", "不喜欢能退吗", title="某指南")
    assert yaml.safe_load(guide) == {"网上买的东西不想要了，能退吗？": ["不喜欢能退吗"]}
    assert guide.splitlines()[1].startswith('"网上买的东西不想要了')  # guide headings are quoted keys


@pytest.mark.parametrize("question", ["说明书写着: 不退换，合法吗", "#1 号问题", "- 开头的问题", "'引号' 问题",
                                      "yes", "123", "问题 # 带井号", "[链接]", "a: b"])
def test_odd_questions_are_quoted_and_read_back_unchanged(question):
    out = annotate.insert_question(LAW_YAML, "第四条", question)
    assert yaml.safe_load(out)["第四条"][-1] == question
    assert annotate.delete_question(out, "第四条", question) == LAW_YAML


def test_delete_removes_the_line_and_an_emptied_key():
    out = annotate.insert_question(LAW_YAML, "第七条", "商家不安全伤到我了", order=["第四条", "第七条", "第九条"])
    assert annotate.delete_question(out, "第七条", "商家不安全伤到我了") == LAW_YAML
    assert annotate.delete_question(LAW_YAML, "第七条", "没有的问题") is None
    assert annotate.delete_question(LAW_YAML, "第四条", "没有的问题") is None


def test_annotation_text_is_masked_and_checked():
    assert annotate.clean_question("  我的电话 13812345678\n能退吗 ") == "我的电话 [手机号] 能退吗"
    with pytest.raises(annotate.AnnotationError):
        annotate.clean_question("   ")
    with pytest.raises(annotate.AnnotationError):
        annotate.clean_question("长" * 201)


def test_yaml_path_stays_inside_the_typical_questions_folder(writable_kb):
    assert annotate.yaml_path(writable_kb, "laws/a.md").name == "a.yaml"
    for bad in ("../../x.md", "/etc/passwd", "", "typical_questions/laws/a.md"):
        with pytest.raises(annotate.AnnotationError):
            annotate.yaml_path(writable_kb, bad)


REFUSED = "网购的床垫有甲醛味道"
SOURCE, SECTION = "laws/consumer-protection-law.md", "第二十四条"


def test_annotation_makes_a_refused_question_answered_in_seconds(writable_kb, tmp_path):
    from rag.pipeline import Assistant

    # an empty vector cache: what the rebuild embeds is then exactly what the serving index lacks
    writable_kb = writable_kb.with_(embedding_cache=tmp_path / "embeddings.sqlite3")
    a = Assistant(writable_kb)
    before = a.ask(REFUSED)
    assert before["refused"], "precondition: the shipped corpus does not answer this"
    yaml_file = writable_kb.corpus_dir / "typical_questions" / "laws" / "consumer-protection-law.yaml"
    original = yaml_file.read_bytes()
    version = a.index.version
    t0 = time.perf_counter()
    out = annotate.add(writable_kb, SOURCE, SECTION, REFUSED, assistant=a)
    took = time.perf_counter() - t0
    assert out.ok and out.embedded == 1, out  # only the new question is embedded
    assert took < 10, took
    assert a.index.version != version  # the assistant switched without a restart
    after = a.ask(REFUSED)
    assert not after["refused"]
    assert [(c["source"], c["section"]) for c in after["citations"]][0] == (SOURCE, SECTION)
    text = yaml_file.read_text(encoding="utf-8")
    assert f"  - {REFUSED}  # 后台标注 " in text and text.startswith(original.decode("utf-8").split("\n")[0])
    listed = annotate.list_annotations(writable_kb)
    assert [(x.source, x.section, x.question) for x in listed] == [(SOURCE, SECTION, REFUSED)]
    again = annotate.add(writable_kb, SOURCE, SECTION, REFUSED, assistant=a)
    assert not again.ok and "已经是" in again.message
    with pytest.raises(annotate.AnnotationError):
        annotate.add(writable_kb, SOURCE, "第九百条", REFUSED, assistant=a)
    with pytest.raises(annotate.AnnotationError):
        annotate.add(writable_kb, "laws/no-such-law.md", SECTION, REFUSED, assistant=a)
    print(f"annotation to answered: {took:.2f}s")

    removed = annotate.remove(writable_kb, SOURCE, SECTION, REFUSED, assistant=a)
    assert removed.ok and removed.embedded == 0
    assert yaml_file.read_bytes() == original  # the file is exactly as it was
    assert a.ask(REFUSED)["refused"]
    assert annotate.list_annotations(writable_kb) == []


def test_a_failed_rebuild_puts_the_file_back(writable_kb, monkeypatch):
    from rag import index as index_module
    from rag import store as store_module
    from rag.pipeline import Assistant

    a = Assistant(writable_kb)
    yaml_file = writable_kb.corpus_dir / "typical_questions" / "laws" / "consumer-protection-law.yaml"
    original = yaml_file.read_bytes()

    def busy(*args, **kwargs):
        raise index_module.IndexBusy("另一个索引重建正在进行，请稍后再试")

    monkeypatch.setattr(store_module, "build_index", busy)
    out = annotate.add(writable_kb, SOURCE, SECTION, REFUSED, assistant=a)
    assert not out.ok and "没有保存" in out.message
    assert yaml_file.read_bytes() == original


# --------------------------------------------------------------------------- retrieval testing


def test_hit_test_explains_every_configuration(assistant):
    from rag.hittest import DEFAULT_CONFIG, HitTester, configs

    names = list(configs())
    assert DEFAULT_CONFIG in names and "plain-baseline" not in names and len(names) >= 5
    h = HitTester(assistant)
    q = "网上买的衣服不喜欢，7天内能无理由退货吗？"
    for name in names:
        e = h.explain(q, name, None, 5)
        assert e.result["question"] == q and abs(e.result["confidence"] - e.confidence) < 1e-3, name
        assert e.threshold == assistant.settings.refuse_below and e.refused == e.result["refused"]
        assert [r.fused_rank for r in e.fused] == list(range(1, len(e.fused) + 1))
        # the answer quotes passages from the fused list (the composer may go below k for steps)
        top = {(r.source, r.section) for r in e.fused}
        assert {(c["source"], c["section"]) for c in e.result["citations"]} <= top, name
        if e.mode == "keyword":
            assert e.dense == [] and all(r.dense_rank is None for r in e.fused)
        if e.mode == "dense":
            assert e.keyword == [] and all(r.keyword_rank is None for r in e.fused)
        if e.mode != "keyword":
            assert [r.dense_rank for r in e.dense] == list(range(1, len(e.dense) + 1))
    e = h.explain(q)  # default configuration: what a shopper gets
    assert e.result["answer"] == assistant.ask(q)["answer"]
    tq = [r for r in e.fused if r.matched_question]
    assert tq and all(r.question_cos > 0.8 for r in tq)  # each row names its closest typical question
    assert any("七天" in r.matched_question or "7天" in r.matched_question or "不喜欢" in r.matched_question for r in tq)
    assert h.explain(q, DEFAULT_CONFIG, "keyword", 3).mode == "keyword"
    with pytest.raises(ValueError):
        h.explain(q, "no-such-config")


def test_passage_search_finds_articles_by_name_and_words(assistant):
    from rag.hittest import search_passages

    found = search_passages(assistant.index, "消费者权益保护法 第二十四条")
    assert (SOURCE, SECTION) in [(s, sec) for s, sec, _, _ in found[:3]]
    assert search_passages(assistant.index, "七日无理由退货") and search_passages(assistant.index, "") == []


def test_unanswered_questions_are_grouped_by_meaning_worst_first(assistant):
    from rag.unresolved import Grouper

    def row(q, ts, refused=True, feedback=None):
        return {"question": q, "ts": ts, "created": f"2026-12-01T10:00:{ts:02d}", "refused": refused,
                "feedback": feedback, "retrieved": [{"source": "laws/a.md", "section": "第一条", "title": "甲"}]}

    rows = [row("网购的床垫有甲醛味道", 1), row("网购的床垫有甲醛味道", 2), row("买的床垫甲醛超标怎么办", 3),
            row("床垫有很重的甲醛味能退吗", 4, refused=False, feedback="down"),
            row("如何学习 Python 编程？", 5), row("怎么学python", 6), row("今天天气怎么样", 7)]
    groups = Grouper(assistant.embedder).group(rows)
    # a group is named by its most frequent wording (ties: the most recent)
    assert [g.question for g in groups] == ["网购的床垫有甲醛味道", "怎么学python", "今天天气怎么样"]
    first = groups[0]
    assert first.count == 4 and first.refused == 3 and first.down == 1
    assert first.questions[0] == ("网购的床垫有甲醛味道", 2) and len(first.questions) == 3
    assert first.first.endswith(":01") and first.last.endswith(":04")
    assert first.retrieved == [("laws/a.md", "第一条", "甲", 4)]
    assert groups[1].count == 2
