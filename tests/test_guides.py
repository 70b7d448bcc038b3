"""The project's howto guides cite only corpus articles, and state only figures those articles contain.

Why: the assistant quotes howto sentences verbatim next to the statute (docs/guide-writing.md),
so a dangling 《法名》第N条 or a figure the article does not have is a wrong legal claim with a
citation that seems to back it. Planted cases are written to tmp_path; the shipped guides are
only read.
"""
from __future__ import annotations

import pytest

from eval.check_guides import LawIndex, check_file, figures, howto_files, main, references
from rag.config import REPO_ROOT

CORPUS = REPO_ROOT / "corpus"
TARGET_GUIDES = 12

FRONT = """---
title: "测试指南"
kind: howto
written: "2026-12-01"
---

# 测试指南

## 买到假货能赔多少？

"""
FRAUD_OK = ("经营者提供商品有欺诈行为的，消费者可以要求增加赔偿购买商品价款的三倍，增加赔偿的金额不足五百元的，"
            "为五百元（依据：《消费者权益保护法》第五十五条）。")


@pytest.fixture(scope="module")
def laws() -> LawIndex:
    return LawIndex.from_corpus(CORPUS)


def check(tmp_path, laws, body: str):
    """Problems of a one-off guide with the given body, written to a temporary file."""
    path = tmp_path / "howto-test.md"
    path.write_text(FRONT + body + "\n", encoding="utf-8")
    return check_file(path, laws)


def errors(problems):
    return [p for p in problems if p.severity == "error"]


# ---- the gate over the shipped guides

def test_every_shipped_howto_guide_has_no_dangling_reference_and_no_unsupported_figure(laws):
    problems = [p for f in howto_files(CORPUS) for p in errors(check_file(f, laws))]
    assert not problems, "\n" + "\n".join(map(str, problems))


def test_at_least_twelve_howto_guides_are_shipped():
    assert len(howto_files(CORPUS)) >= TARGET_GUIDES


# ---- what the checker catches

def test_a_correct_sentence_passes(tmp_path, laws):
    assert check(tmp_path, laws, FRAUD_OK) == []


def test_an_article_the_law_does_not_have_is_reported(tmp_path, laws):
    [problem] = check(tmp_path, laws, "平台应当公示服务协议（依据：《电子商务法》第九百条）。")
    assert problem.severity == "error" and "第九百条" in problem.reason and problem.line == 11


def test_a_law_that_is_not_in_the_corpus_is_reported(tmp_path, laws):
    [problem] = check(tmp_path, laws, "合同依法成立即有约束力（依据：《合同法》第八条）。")
    assert "《合同法》不在语料库里" in problem.reason


def test_a_figure_the_cited_article_does_not_contain_is_reported(tmp_path, laws):
    planted = FRAUD_OK.replace("三倍", "五倍")
    [problem] = check(tmp_path, laws, planted)
    assert "五倍" in problem.reason and "《消费者权益保护法》第五十五条" in problem.reason


def test_a_figure_in_a_sentence_that_cites_nothing_is_reported(tmp_path, laws):
    [problem] = check(tmp_path, laws, "商家一般会在3天内处理退款申请。")
    assert problem.severity == "error" and "“3天”" in problem.reason


def test_an_uncited_sentence_without_figures_is_only_a_warning(tmp_path, laws):
    [problem] = check(tmp_path, laws, "收到包裹后先当着快递员的面拆开检查。")
    assert problem.severity == "warning"


def test_seven_days_in_digits_and_seven_days_in_chinese_are_the_same_number(tmp_path, laws):
    assert set(figures("7天")) == set(figures("七日")) == {7}
    assert set(figures("500元")) == set(figures("五百元")) == {500}
    assert check(tmp_path, laws, "网购的商品，消费者有权自收到商品之日起7天内无理由退货（依据：《消费者权益保护法》第二十五条）。") == []


def test_article_numbers_law_titles_and_step_numbers_are_not_figures(tmp_path, laws):
    body = "3. 消费者定作的商品不适用七日无理由退货（依据：《网络购买商品七日无理由退货暂行办法》第六条第一款第（一）项）。"
    assert check(tmp_path, laws, body) == []


def test_a_bare_article_after_a_named_law_belongs_to_that_law(tmp_path, laws):
    cited = "（依据：《电子商务法》第二十条、《消费者权益保护法》第五十五条、第五十六条）"
    assert [(r.law, r.article) for r in references(cited)] == [
        ("电子商务法", "第二十条"), ("消费者权益保护法", "第五十五条"), ("消费者权益保护法", "第五十六条")]
    # 第八十条 exists in the 电子商务法 but not in the 消费者权益保护法, the law named last before it.
    [problem] = check(tmp_path, laws, "商家应当承担责任（依据：《电子商务法》第二十条、《消费者权益保护法》第五十五条、第八十条）。")
    assert "《消费者权益保护法》没有第八十条" in problem.reason


def test_the_civil_code_resolves_across_both_excerpt_files(tmp_path, laws):
    assert len(laws.resolve("民法典")) == 2 and laws.resolve("中华人民共和国民法典") == laws.resolve("民法典")
    body = ("卖方交付的商品不符合约定的，应当承担违约责任；商品缺陷造成他人损害的，生产者应当承担侵权责任"
            "（依据：《民法典》第五百七十七条、第一千二百零二条）。")
    assert check(tmp_path, laws, body) == []


def test_a_numbered_step_is_one_sentence_even_with_several_clauses(tmp_path, laws):
    step = "1. 消费者可以要求赔偿。欺诈的，增加赔偿价款的三倍（依据：《消费者权益保护法》第五十五条）。"
    assert check(tmp_path, laws, step) == []


def test_the_command_line_fails_on_planted_errors_and_passes_a_correct_guide(tmp_path, laws, capsys):
    good = tmp_path / "good.md"
    good.write_text(FRONT + FRAUD_OK + "\n", encoding="utf-8")
    bad = tmp_path / "bad.md"
    bad.write_text(FRONT + FRAUD_OK.replace("三倍", "五倍") + "\n平台应当公示服务协议（依据：《电子商务法》第九百条）。\n",
                   encoding="utf-8")
    assert main([str(good)]) == 0
    assert main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.md:11:" in out and "bad.md:12:" in out and "2 个错误" in out


def test_every_howto_section_fits_one_passage():
    """A section longer than a chunk is split, and a step quoted from its second half loses its heading."""
    import re as _re

    from rag.config import Settings

    limit = Settings().chunk_max_chars
    for path in howto_files(CORPUS):
        body = path.read_text(encoding="utf-8").split("\n---", 1)[-1]
        for section in _re.split(r"^## ", body, flags=_re.M)[1:]:
            assert len(section) <= limit, f"{path.name}: {section[:30]}… has {len(section)} characters"
