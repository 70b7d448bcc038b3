"""The answer shape (要点 / 依据 / 怎么做), its relevance gate, and the helpers it rests on.

Unit tests build hits by hand (no model); the end-to-end ones use the shipped index.
"""
import re
from pathlib import Path

import pytest

from rag.answer import answer_units, compose, question_intents, relevant_hits
from rag.chunking import Chunk
from rag.gaps import gaps, load_sectors, uncovered_sectors
from rag.retrieve import Hit, Retrieval, focus_question

ROOT = Path(__file__).resolve().parent.parent

ART55 = ("经营者提供商品或者服务有欺诈行为的，应当按照消费者的要求增加赔偿其受到的损失，增加赔偿的金额为消费者购买商品的价款"
         "或者接受服务的费用的三倍；增加赔偿的金额不足五百元的，为五百元。法律另有规定的，依照其规定。")
ART148 = ("生产不符合食品安全标准的食品或者经营明知是不符合食品安全标准的食品，消费者除要求赔偿损失外，还可以向生产者或者经营者"
          "要求支付价款十倍或者损失三倍的赔偿金；增加赔偿的金额不足一千元的，为一千元。但是，食品的标签、说明书存在不影响"
          "食品安全且不会对消费者造成误导的瑕疵的除外。")
LIST = ("下列商品不适用七日无理由退货规定：\n（一）消费者定作的商品；\n（二）鲜活易腐的商品；\n"
        "（三）在线下载或者消费者拆封的音像制品、计算机软件等数字化商品；\n（四）交付的报纸、期刊。")


def hit(text, *, title="中华人民共和国消费者权益保护法", section="第五十五条", kind="law", score=0.03, dense=0.9,
        rank=1, source="laws/x.md"):
    c = Chunk(id=f"{source}#{section}", source=source, title=title, kind=kind, section=section, heading_path=[section],
              article=section, start=0, end=len(text), text=text)
    return Hit(c, score, dense, 1.0, rank, 0.0)


def retrieval(question, *hits, confidence=0.9):
    from rag.keyword import tokenize

    return Retrieval(list(hits), confidence, tokenize(question))


def markers(text):
    return {int(n) for n in re.findall(r"\[(\d+)\]", text)}


def test_the_key_point_comes_first_and_keeps_the_minimum_that_follows_it():
    a = compose("卖假货的能赔多少", retrieval("卖假货的能赔多少 欺诈 三倍", hit(ART55)), 0.5)
    first = a.text.splitlines()[0]
    assert first.startswith("要点：") and "三倍" in first and "不足五百元的，为五百元" in first


def test_a_short_detail_in_the_articles_other_clause_is_kept_after_the_key_point():
    text = ("经营者采用网络方式销售商品，消费者有权自收到商品之日起七日内退货，且无需说明理由。\n\n"
            "消费者退货的商品应当完好。退回商品的运费由消费者承担；")
    a = compose("网上买的衣服不想要了能退吗", retrieval("网上 衣服 不想要 能 退 七日 退货", hit(text, section="第二十五条")), 0.5)
    assert "七日内退货" in a.text and "运费由消费者承担" in a.text


def test_a_clause_keeps_its_enumerated_items():
    text = "预包装食品的包装上应当有标签。标签应当标明下列事项：\n\n（一）名称、生产日期；\n\n（二）保质期；\n\n专供婴幼儿的食品另有要求。"
    a = compose("零食包装上应该印哪些内容", retrieval("零食 包装 标签 哪些 内容", hit(text, title="中华人民共和国食品安全法",
                                                                       section="第六十七条")), 0.5)
    assert "生产日期" in a.text and "保质期" in a.text


def test_a_quoted_rule_keeps_its_minimum_and_its_exception():
    a = compose("买到不合格食品能赔多少", retrieval("不合格 食品 赔 多少 十倍", hit(ART148, title="中华人民共和国食品安全法",
                                                                    section="第一百四十八条")), 0.5)
    assert "不足一千元的，为一千元" in a.text and "但是，食品的标签" in a.text


def test_one_enumerated_item_is_quoted_when_one_answers():
    long_tail = "消费者基于前款规定的商品，退货时应当完好。" * 6  # long enough not to be quoted whole
    h = hit(LIST + "\n" + long_tail, title="网络购买商品七日无理由退货暂行办法", section="第六条")
    a = compose("定作的商品能七天无理由退吗", retrieval("定作 商品 七日 无理由 退货", h), 0.5)
    assert "（一）消费者定作的商品" in a.text
    assert "鲜活易腐" not in a.text and "报纸" not in a.text


def test_a_statute_ranked_below_the_first_two_is_quoted_only_when_it_shares_the_questions_words():
    first = hit(ART55, score=0.03)
    guide = hit("买到假货可以要求退一赔三。", title="网购买到假货怎么办", section="假货赔多少", kind="howto",
                source="guides/g.md", score=0.029)
    # shares a third of the question's words: enough at rank 2, not at rank 3
    some = hit("经营者对欺诈行为应当依法处理，假货由市场监督管理部门查处。", section="第五十六条", score=0.028)
    assert "第五十六条" not in compose("卖假货的能赔多少", retrieval("卖假货的能赔多少 欺诈 三倍", first, guide, some), 0.5).text
    assert "第五十六条" in compose("卖假货的能赔多少", retrieval("卖假货的能赔多少 欺诈 三倍", first, some, guide), 0.5).text
    many = hit("卖假货属于欺诈，消费者可以要求赔偿三倍，赔多少看价款。", section="第五十六条", score=0.028)
    assert "第五十六条" in compose("卖假货的能赔多少", retrieval("卖假货的能赔多少 欺诈 三倍", first, guide, many), 0.5).text


def test_a_statute_the_key_guide_cites_is_quoted_further_down_when_it_gives_the_amount_asked():
    guide = hit("卖过期食品的，消费者可以主张其构成明知，要求十倍赔偿（依据：《食品安全法》第一百四十八条）。\n\n"
                "1. 保质期已过的食品禁止经营（依据：《食品安全法》第三十四条）。",
                title="过期食品怎么索赔", section="买到过期食品，商家算不算明知？", kind="howto", source="guides/f.md")
    ban = hit("禁止生产经营超过保质期的食品。", title="中华人民共和国食品安全法", section="第三十四条", score=0.029)
    other = hit("食品经营者应当按照保证食品安全的要求贮存食品。", title="中华人民共和国食品安全法", section="第五十四条",
                score=0.029)
    amount = hit(ART148, title="中华人民共和国食品安全法", section="第一百四十八条", score=0.028)
    a = compose("买到过期食品能赔多少", retrieval("买到 过期 食品 能 赔 多少", guide, ban, other, amount), 0.5)
    assert "不足一千元的，为一千元" in a.text and "第五十四条" not in a.text


def test_the_key_point_keeps_the_next_sentence_of_its_passage_that_is_about_the_question():
    text = "快递员未经收货人同意把快件放进快递柜的，属于违规投递。快件因此丢失的，由快递公司承担赔偿责任。与本题无关的其他说明在此。"
    a = compose("快递员没问我就放快递柜结果丢了谁负责", retrieval("快递员 快递柜 丢失 谁 负责 收货人 同意",
                                                  hit(text, title="快递指南", section="丢件", kind="howto", source="guides/g.md")), 0.5)
    first = a.text.splitlines()[0]
    assert "未经收货人同意" in first and "快递公司承担赔偿责任" in first and "无关" not in first


def test_a_question_about_the_routes_gets_every_route():
    routes = ("消费者和经营者发生消费者权益争议的，可以通过下列途径解决：\n（一）与经营者协商和解；\n（二）请求消费者协会调解；\n"
              "（三）向有关行政部门投诉；\n（四）根据仲裁协议提请仲裁；\n（五）向人民法院提起诉讼。" + "其他说明文字。" * 40)
    a = compose("消费纠纷 解决途径", retrieval("消费 纠纷 解决 途径 调解", hit(routes, section="第三十九条")), 0.5)
    assert "协商和解" in a.text and "提起诉讼" in a.text


def test_steps_come_from_the_guides_section_that_asks_how_not_the_one_that_asks_how_long():
    long_ = hit("超过十五日不退款的，视为故意拖延。\n\n1. 超过十五日未办理退货手续的，视为故意拖延。\n2. 不提供退货地址的，视为故意拖延。",
                title="商家一直拖着不退款怎么办", section="商家拖多久不退款，就算故意拖延？", kind="howto", source="guides/r.md")
    how = hit("可以找平台调解，也可以投诉。\n\n1. 在平台上申请介入。\n2. 向市场监督管理部门投诉。",
              title="商家一直拖着不退款怎么办", section="商家一直拖着不退款，我该怎么一步步处理？", kind="howto",
              source="guides/r.md", score=0.029)
    a = compose("商家一直拖着不退款怎么办", retrieval("商家 拖着 不 退款 怎么办", long_, how), 0.5)
    steps = a.text.split("怎么做：", 1)[1]
    assert "申请介入" in steps and "退货地址" not in steps


def test_a_rule_from_another_domain_is_not_quoted_for_an_ordinary_product():
    cup = hit("电子商务经营者应当承担商品运输中的风险和责任。", title="中华人民共和国电子商务法", section="第二十条")
    food = hit("网络食品交易第三方平台提供者应当对入网食品经营者进行实名登记。", title="中华人民共和国食品安全法",
               section="第六十二条", rank=2, score=0.029)
    kept = relevant_hits("买的杯子到手就碎了怎么办", [cup, food])
    assert kept == [cup]
    assert relevant_hits("买的零食到手就发霉了怎么办", [cup, food]) == [cup, food]


def test_a_passage_far_from_the_question_by_meaning_is_not_quoted():
    best = hit(ART55, dense=0.92)
    far = hit("违反本办法规定，构成犯罪的，依法追究刑事责任。", section="第五十六条", dense=0.80, rank=2, score=0.029)
    assert relevant_hits("卖假货的能赔多少", [best, far]) == [best]


def test_steps_come_from_a_project_guide_when_the_shopper_asks_what_to_do():
    guide = hit("网购商品在运输途中摔坏的，由卖家承担商品运输中的风险和责任（依据：《电子商务法》第二十条）。\n\n"
                "1. 先联系卖家说明商品损坏（依据：《电子商务法》第二十条）。\n2. 卖家拒绝的，可以向平台投诉（依据：《电子商务法》第六十一条）。",
                title="网购商品运输途中损坏怎么办", section="快递送到时东西已经摔坏了，由谁来负责？", kind="howto",
                source="guides/howto-transit-damage.md")
    law = hit("电子商务经营者应当按照承诺或者与消费者约定的方式、时限向消费者交付商品或者服务，并承担商品运输中的风险和责任。",
              title="中华人民共和国电子商务法", section="第二十条", rank=2, score=0.029)
    a = compose("杯子到手就碎了，商家不认怎么办？", retrieval("杯子 碎了 商家 不认 运输 损坏", guide, law), 0.5)
    lines = a.text.splitlines()
    assert lines[0].startswith("要点：") and "由卖家承担" in lines[0]
    assert "依据：" in lines and any("《中华人民共和国电子商务法》第二十条" in x for x in lines)
    steps = lines[lines.index("怎么做：") + 1:]
    assert [s[:2] for s in steps] == ["1.", "2."] and all(markers(s) for s in steps)
    assert [s["text"][:6] for s in a.sections["steps"]] == ["先联系卖家说", "卖家拒绝的，"]


def test_no_steps_are_added_when_the_shopper_does_not_ask_what_to_do():
    guide = hit("可以，收件人有权当面验收（依据：《快递暂行条例》第二十五条）。\n\n1. 当面打开检查（依据：《快递暂行条例》第二十五条）。",
                title="网购商品运输途中损坏怎么办", section="可以先验货再签收吗？", kind="howto")
    a = compose("快递可以先验货再签收吗", retrieval("快递 验货 签收", guide), 0.5)
    assert "怎么做：" not in a.text


def test_a_guide_sentence_quoted_as_the_key_point_drops_the_bare_answer_word_of_its_own_heading():
    guide = hit("可以，收件人有权当面验收（依据：《快递暂行条例》第二十五条）。", title="指南", section="能验货吗？", kind="howto")
    a = compose("快递能不能当面验货", retrieval("快递 当面 验货", guide), 0.5)
    assert a.text.startswith("要点：收件人有权当面验收")
    (c,) = a.citations
    (s,) = c.sentences
    assert guide.chunk.text[s.start:s.end].strip() == s.text.strip()  # offsets still point at the quoted words


def test_every_marker_points_at_a_citation_and_every_citation_is_marked():
    a = compose("卖假货的能赔多少", retrieval("卖假货 赔 多少", hit(ART55), hit(ART148, section="第一百四十八条", rank=2)), 0.5)
    assert markers(a.text) == {c.n for c in a.citations}


def test_low_confidence_refuses_with_no_citations():
    a = compose("红烧肉怎么做", retrieval("红烧肉", hit(ART55), confidence=0.2), 0.5)
    assert a.refused and a.citations == [] and a.text.startswith("资料中没有找到")


def test_a_named_gap_is_said_first_when_refusing_and_when_answering():
    refused = compose("88VIP退货有什么特权", retrieval("88VIP 退货", hit(ART55), confidence=0.2), 0.5, uncovered=["88VIP"])
    assert refused.refused and refused.text.startswith("资料中没有关于『88VIP』的规定")
    answered = compose("88VIP退货有什么特权", retrieval("88VIP 退货", hit(ART55)), 0.5, uncovered=["88VIP"])
    assert not answered.refused and answered.text.startswith("资料中没有关于『88VIP』的规定")
    assert answered.sections["uncovered"] == ["88VIP"]


@pytest.mark.parametrize("question, term", [("淘宝88VIP会员退货有什么特权", "88VIP"), ("美团准时宝怎么赔", "准时宝"),
                                            ("闲鱼服务费要抽几个点", "服务费"), ("闲鱼卖东西平台要抽几个点的服务费？", "服务费"),
                                            ("在飞猪上买的特价机票，退票手续费按什么标准扣", "机票"),
                                            ("寄相机想保价，顺丰的保价费是按百分之几收的", "保价费"),
                                            ("仅退款商家不同意怎么办", "仅退款"),
                                            ("网上买的空调用了两年压缩机坏了，国家规定保修几年", "空调的三包期限"),
                                            ("12315电话晚上几点以后就打不通了", "办公、接听时间")])
def test_names_the_sources_never_mention_are_found(question, term):
    assert any(term in found for found in gaps(question, {"退货", "会员", "怎么", "闲鱼"}))


def test_a_gap_in_a_sector_names_the_sector_and_the_words_asked():
    assert gaps("在飞猪上买的特价机票，退票的话怎么办", set()) == ["航空客运（机票、退票）"]


@pytest.mark.parametrize("question", ["淘宝买的杯子到手就碎了怎么办", "除了医药费还能多要吗", "网上买的衣服不喜欢能退吗",
                                      "充电宝充电时炸了找谁赔", "支付宝付的钱能要求原路退回吗",
                                      "吃坏了花了几百医药费，店家只肯退餐费，还能额外赔多少？",
                                      "店铺关了，商家电话打不通，能找平台赔吗", "手机三包期内坏了两次能换新机吗",
                                      "空调用了一个月就不制冷了能退吗"])
def test_everyday_words_are_not_taken_for_uncovered_names(question):
    assert gaps(question, set()) == []


def test_a_sector_word_inside_another_word_is_not_named():
    assert uncovered_sectors("汽车退货时相关税费要退吗") == []
    assert uncovered_sectors("进口奶粉的关税怎么算") == ["关税"]


def test_sector_words_never_fire_on_the_law_and_guide_texts():
    """The list names what the sources lack: a word the laws or our own guides use, as a word, doesn't belong in it.

    (A third-party experience guide, kind ``guide``, may name a programme in passing without any rule on it.)
    """
    from rag.answer import split_sentences

    words = load_sectors()
    assert len(words) > 100
    fired = set()
    for path in sorted((ROOT / "corpus" / "laws").glob("*.md")) + sorted((ROOT / "corpus" / "guides").glob("howto-*.md")):
        for s in split_sentences(path.read_text(encoding="utf-8")):
            if any(w in s.text for w in words):
                fired.update(uncovered_sectors(s.text, words))
    assert fired == set()


def test_question_intents_read_what_is_asked():
    assert question_intents("卖假货的能赔多少") >= {"amount"}
    assert question_intents("运费谁出") >= {"who"}
    assert question_intents("寄回去的运费得我自己掏？") >= {"who"}
    assert question_intents("退款要多久才到账") >= {"time"}
    assert question_intents("商家一直拖着不退款怎么办") >= {"how"}


def test_answer_units_keep_a_lead_in_with_its_items():
    units = answer_units(LIST)
    assert len(units) == 1 and units[0].text.startswith("下列商品") and "（四）交付的报纸、期刊" in units[0].text


def test_answer_units_split_ordinary_sentences():
    units = answer_units("第一句话在这里。第二句话也在这里；第三句。")
    assert [u.text for u in units] == ["第一句话在这里。", "第二句话也在这里；", "第三句。"]


def test_focus_question_takes_the_asking_clause_of_a_long_story():
    story = ("上个月在网上买了一个电饭煲，用了两个星期以后内胆的涂层开始大片脱落。煮出来的饭里都是黑色的碎屑，"
             "联系客服一直说在处理。这种情况我能要求退货吗？")
    # the asking clause and the one before it, which usually names the trouble
    assert focus_question(story) == "煮出来的饭里都是黑色的碎屑，联系客服一直说在处理。这种情况我能要求退货吗？"


def test_focus_question_leaves_short_questions_alone():
    assert focus_question("网上买的衣服不喜欢能退吗") is None


def test_the_shipped_assistant_answers_the_cup_question_with_the_transit_rule_and_steps(assistant):
    r = assistant.ask("淘宝买的杯子到手就碎了，商家不认怎么办？")
    lines = r["answer"].splitlines()
    assert lines[0].startswith("要点：") and "运输" in lines[0]
    assert "怎么做：" in lines
    kinds = {c["kind"] for c in r["citations"]}
    assert "law" in kinds and "howto" in kinds
    assert not any("食品" in c["title"] for c in r["citations"])
    assert r["sections"]["key_point"]["n"] in {c["n"] for c in r["citations"]}


def test_the_shipped_assistant_quotes_the_fraud_rule_with_its_minimum_and_not_the_articles_other_clause(assistant):
    """消法第五十五条's second 款 (defects that harm health) is another rule than the one asked about."""
    text = assistant.ask("卖假货的能赔多少")["answer"]
    assert "三倍" in text and "不足五百元的，为五百元" in text
    assert "惩罚性赔偿" not in text


def test_the_shipped_assistant_says_first_that_a_sector_of_its_own_is_not_covered(assistant):
    r = assistant.ask("京东白条逾期了三天，逾期费怎么算，会不会上征信")
    assert r["answer"].startswith("资料中没有关于『消费信贷（白条")
    assert any("白条" in term for term in r["sections"]["uncovered"])


def test_the_whole_list_is_quoted_when_the_shopper_asks_which_cases_there_are():
    long_tail = "消费者基于前款规定的商品，退货时应当完好。" * 6
    h = hit(LIST + "\n" + long_tail, title="网络购买商品七日无理由退货暂行办法", section="第六条")
    a = compose("哪些商品不能七天无理由退货，定作的算吗", retrieval("哪些 商品 定作 七日 无理由 退货", h), 0.5)
    assert "（一）消费者定作的商品" in a.text and "（四）交付的报纸、期刊" in a.text
