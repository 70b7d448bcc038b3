"""Extractive answer composition: 要点, then 依据, then 怎么做 — every line copied from a source.

Why extractive by default: it needs no LLM, runs in about a millisecond, and cannot claim
anything the sources don't say. The shape follows what a shopper needs:

- 要点: the one source sentence (or clause) that answers the ask — who pays, how much, which
  deadline, yes or no — chosen by what the question asks for, not only by word overlap;
- 依据: the statute sentences that carry the decisive detail, never cut before a minimum
  ("不足…的，为…") or an exception ("但是…", "…除外"); one enumerated item when one answers;
- 怎么做: numbered steps from a project guide (kind ``howto``) when the shopper asks what to do.

A passage is quoted only when it is about the question's matter (the relevance gate):
close to the question by meaning relative to the best passage, and not from another domain
(food/drug rules for a cup, car 三包 for a phone) unless the question is in that domain.
Fewer, right quotes beat more.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from .keyword import tokenize
from .labels import KIND_LABEL, REFUSAL, section_label
from .retrieve import Hit, Retrieval, cited_articles, short_title

SENTENCE_END = re.compile(r"[^。！？；!?\n]+[。！？；!?]?")
_ITEM = re.compile(r"^\s*(?:[（(][一二三四五六七八九十\d]+[)）]|[一二三四五六七八九十]+、|\d+[.、])")
_STEP = re.compile(r"^[ \t]*(\d+)[.、．][ \t]*(\S.*)$", re.M)
# A sentence that qualifies the one before it: quoting one without the other misleads.
_QUALIFIER = re.compile(r"^(?:但是|但|不足|增加赔偿的金额不足|其中)|不足[^。；]{1,24}的，为|除外[。；]?$")
# A guide section opens by answering its own heading ("可以，…", "算：…"); quoted under another question
# that bare word could answer something else, so the 要点 keeps only the clause that states the rule.
_BARE_ANSWER = re.compile(r"^[^，：,:。]{1,4}[，：,:]")

# What the shopper asks for, and the words of a sentence that gives it.
INTENTS = {
    "amount": (re.compile(r"多少|几倍|赔多少|怎么赔|赔偿标准|金额|钱|赔几"),
               re.compile(r"倍|元|赔偿金|价款|费用")),
    "who": (re.compile(r"谁|哪方|哪一方|哪家|自己(?:掏|出|付|承担)|我(?:来)?(?:出|付|承担)[吗？?]"),
            re.compile(r"承担|负担|负责|由[^。；，]{1,12}(?:承担|负担|负责|赔偿)")),
    "time": (re.compile(r"多久|多长时间|几天|多少天|期限|时限|什么时候|几日|多少日|哪天|过了.{0,6}还"),
             re.compile(r"[一二三四五六七八九十百\d]+(?:日|天|个月|年|小时)|之日起|期限|期间|及时")),
    "yesno": (re.compile(r"能不能|可不可以|能否|是否|可以吗|行不行|算不算|合法吗|合理吗|是真的吗|有没有|能.{0,12}吗|可以.{0,12}吗|要.{0,8}吗"),
              re.compile(r"可以|有权|应当|不得|不适用|无权|不承担|应予支持|除外")),
    "how": (re.compile(r"怎么办|咋办|咋整|怎么处理|如何处理|怎么做|该怎么|怎么维权|如何维权|维权|去哪|找谁|找哪|向谁|哪里投诉|怎么投诉|如何投诉|"
                       r"怎么要|怎么申请|怎么才能|如何才能|有什么办法|有啥办法|能做什么|步骤|流程|怎么弄|怎么追|要留|保留什么|证据|"
                       r"途径|渠道|准备什么|什么材料|手续|怎么判断|怎么让|怎么查|找.{0,12}还是"),
            re.compile(r"")),
}
# Domains whose rules mislead outside them: a passage in one is quoted only for a question in it.
DOMAINS = {
    "food_drug": (re.compile(r"食品|食物|吃|喝|饮料|饮品|奶粉|零食|保健品|保健食品|外卖|餐|过期|变质|发霉|霉变|添加剂|保质期|酒|茶叶|肉|蔬菜|水果|月饼|蛋糕|药|医疗器械"),
                  re.compile(r"食品|药品|餐饮|食用农产品")),
    "car": (re.compile(r"汽车|新车|买车|购车|提车|车子|修车|整车|车辆|轿车|4[sS]店|发动机|变速[箱器]|家用车"),
            re.compile(r"汽车|机动车|发动机|变速器")),
    "phone": (re.compile(r"手机|移动电话"), re.compile(r"移动电话机")),
    "computer": (re.compile(r"电脑|笔记本|台式机|计算机|平板"), re.compile(r"微型计算机")),
    "audio_video": (re.compile(r"电视|音响|音箱|功放|影碟|家庭影院|投影|视听"), re.compile(r"家用视听")),
}
RANK_PRIOR = (1.0, 0.3, 0.0)  # the 要点 leans to the passage retrieval ranks first
GATE_MARGIN = 0.02  # a passage this much less close (cosine) to the question than the best one is off-topic
GATE_SCORE = 0.75  # …or whose fused retrieval score is below this share of the best one
STEPS_MARGIN = 0.05  # a guide below the first k hits lends its steps only when about as close as the best hit
MAX_BASIS = 2
SHORT_DETAIL = 40  # a sentence of another 款 this short (退回商品的运费由消费者承担) is a detail of the matter, not another rule
KEY_EXTRA = 0.4  # a second sentence of the 要点's passage joins it when it shares this much of the first one's question words
LATER_BASIS_RANK = 2  # a second statute is quoted only when retrieval ranks it this high…
LATER_BASIS_OVERLAP = 0.4  # …or one of its sentences shares this much of the question's words
MAX_STEPS = 4
BASIS_CHARS = 620
BASIS_SHARE = 0.5  # a further sentence of a passage is quoted only if half as close to the question as its best
LEXICAL_FLOOR = 0.25  # a further law passage must share this much of the question's words in one sentence
WHOLE_PASSAGE = 320  # a law passage this short is quoted whole: nothing decisive can be cut off


@dataclass
class Sentence:
    text: str
    start: int  # offset inside the chunk text
    end: int


@dataclass
class Citation:
    n: int
    hit: Hit
    sentences: list[Sentence] = field(default_factory=list)


@dataclass
class Answer:
    text: str
    refused: bool
    citations: list[Citation]
    sections: dict = field(default_factory=dict)  # key_point / basis / steps / uncovered, for the JSON contract


def split_sentences(text: str) -> list[Sentence]:
    out = []
    for m in SENTENCE_END.finditer(text):
        s, e = m.start(), m.end()
        while s < e and text[s] in " \t\u3000-*#>|":
            s += 1
        if e - s >= 4:
            out.append(Sentence(text[s:e], s, e))
    return out


def answer_units(text: str, max_block: int = 320) -> list[Sentence]:
    """Sentences, except that a lead-in ending in "：" is kept together with its enumerated items.

    Why: "下列商品不适用七日无理由退货规定：" says nothing on its own; the
    answer is in the （一）（二）… items that follow it.
    """
    sents = split_sentences(text)
    units: list[Sentence] = []
    i = 0
    while i < len(sents):
        s = sents[i]
        j = i + 1
        if s.text.rstrip().endswith(("：", ":")):
            while j < len(sents) and _ITEM.match(sents[j].text) and sents[j].end - s.start <= max_block:
                j += 1
        if j > i + 1:
            units.append(Sentence(text[s.start:sents[j - 1].end], s.start, sents[j - 1].end))
        else:
            units.append(s)
        i = j
    return units


def _inline(text: str) -> str:
    """One line per quote: the line breaks of enumerations are dropped (Chinese needs no spaces)."""
    return re.sub(r"\s*\n\s*", "", text)


def _weights(tokens: list[str]) -> dict[str, float]:
    w: dict[str, float] = {}
    for t in tokens:
        w[t] = 0.4 if t.startswith("§") else 1.0 + 0.3 * min(len(t), 4)
    return w


@lru_cache(maxsize=50_000)
def _sentence_tokens(sentence: str) -> frozenset[str]:
    """Cache: the same corpus sentences come back query after query, and jieba is the composer's main cost."""
    return frozenset(tokenize(sentence))


def _overlap(sentence: str, weights: dict[str, float]) -> float:
    toks = _sentence_tokens(sentence)
    total = sum(weights.values()) or 1.0
    return sum(v for t, v in weights.items() if t in toks) / total


def source_label(hit: Hit) -> str:
    c = hit.chunk
    section = section_label(c.section)
    if c.part:
        section += f"（第{c.part}段）"
    return f"《{c.title}》{section}"


def question_intents(question: str) -> set[str]:
    return {name for name, (asks, _) in INTENTS.items() if asks.search(question)}


def question_domains(question: str) -> set[str]:
    return {name for name, (asks, _) in DOMAINS.items() if asks.search(question)}


def passage_domains(hit: Hit) -> set[str]:
    text = hit.chunk.title + hit.chunk.text
    return {name for name, (_, marks) in DOMAINS.items() if marks.search(text)}


def relevant_hits(question: str, hits: list[Hit], k: int = 5) -> list[Hit]:
    """The hits worth quoting among the first ``k`` of the question's domain (see module docstring).

    Passages of another domain are skipped, and the next ones in rank take their place: a
    "保修" question retrieves the car, phone and computer 三包 rules first, and none of them
    applies to a shop's own promise.
    """
    asked = question_domains(question)
    in_domain = [h for h in hits if not (passage_domains(h) - asked)][:k]
    if not in_domain:
        return []
    best = in_domain[0]
    return [h for h in in_domain
            if h is best or (h.closeness >= best.closeness - GATE_MARGIN and h.score >= GATE_SCORE * best.score)]


def _with_qualifiers(units: list[Sentence], picked: set[int]) -> set[int]:
    """Add the sentences that qualify a picked one (但是…, 不足…的，为…, …除外), and the sentence a picked qualifier qualifies."""
    out = set(picked)
    for i in sorted(picked):
        j = i + 1
        while j < len(units) and _QUALIFIER.search(units[j].text.strip()):
            out.add(j)
            j += 1
        if _QUALIFIER.search(units[i].text.strip()) and i > 0:
            out.add(i - 1)
    return out


def _enumeration_item(text: str, unit: Sentence, weights: dict[str, float]) -> list[Sentence] | None:
    """For a lead-in + （一）（二）… unit: the lead-in and the one item that answers, when one clearly does."""
    parts = split_sentences(text[unit.start:unit.end])
    if len(parts) < 3:
        return None
    items = parts[1:]
    # Words several items share (商品, 消费者) can't tell the items apart: score by the rest.
    seen: dict[str, int] = {}
    for p in items:
        for t in _sentence_tokens(p.text):
            seen[t] = seen.get(t, 0) + 1
    scored = sorted(((sum(v for t, v in weights.items() if t in _sentence_tokens(p.text) and seen[t] == 1), k)
                     for k, p in enumerate(items)), reverse=True)
    best, second = scored[0][0], scored[1][0]
    if best <= 0 or best < 2 * second:
        return None
    lead, item = parts[0], items[scored[0][1]]
    return [Sentence(lead.text, unit.start + lead.start, unit.start + lead.end),
            Sentence(item.text, unit.start + item.start, unit.start + item.end)]


def _passage_overlap(hit: Hit, weights: dict[str, float]) -> float:
    return max((_overlap(u.text, weights) for u in split_sentences(hit.chunk.text)), default=0.0)


def _intent_fit(sentence: str, intents: set[str]) -> float:
    return sum(0.25 for name in intents if name != "how" and INTENTS[name][1].search(sentence))


_ENUMERATION = re.compile(r"[：:]\s*(?:[（(][一二三四五六七八九十\d]+[)）]|[一二三四五六七八九十]+、)")


_ASKS_LIST = re.compile(r"哪些|哪几|何种|什么情形|什么情况下|几种|范围|例外|都有什么|包括什么|途径|渠道")


def _quote(units: list[Sentence], chosen: set[int], text: str, weights: dict[str, float],
           whole_lists: bool = False) -> list[Sentence]:
    """The chosen units, an enumeration narrowed to its lead-in and the item that answers
    (unless ``whole_lists``: the shopper asks which cases there are)."""
    out: list[Sentence] = []
    for i in sorted(chosen):
        u = units[i]
        if _ENUMERATION.search(u.text) and not whole_lists:
            narrowed = _enumeration_item(text, u, weights)
            if narrowed:
                out.extend(narrowed)
                continue
        out.append(u)
    return out


def _join(sentences: list[Sentence]) -> str:
    """Quoted sentences in order; a gap between non-adjacent ones is shown as …"""
    parts, last = [], None
    for s in sentences:
        if last is not None and s.start > last + 2:
            parts.append("…")
        parts.append(s.text.strip())
        last = s.end
    return _inline("".join(parts))


def _steps(hit: Hit) -> list[Sentence]:
    return [Sentence(m.group(2).strip(), m.start(2), m.start(2) + len(m.group(2).rstrip()))
            for m in _STEP.finditer(hit.chunk.text)]


_CLAUSE_BREAK = re.compile(r"\n\s*\n(?!\s*(?:[（(][一二三四五六七八九十\d]+[)）]|[一二三四五六七八九十]+、))")


def _clause_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The 款 (paragraph of an article, its enumerated items included) that holds text[start:end]."""
    lo, hi = 0, len(text)
    for m in _CLAUSE_BREAK.finditer(text):
        if m.end() <= start:
            lo = m.end()
        elif m.start() >= end:
            hi = m.start()
            break
    return lo, hi


def _carries(hit: Hit, intents: set[str]) -> bool:
    """Some sentence of the passage gives what is asked: an amount, a deadline, who bears it."""
    asked = intents & {"amount", "time", "who"}
    return any(_intent_fit(u.text, asked) for u in split_sentences(hit.chunk.text)) if asked else False


def _key_companion(units: list[Sentence], i: int, weights: dict[str, float], intents: set[str]) -> set[int]:
    """The next-best sentence of the 要点's passage, when it shares at least KEY_EXTRA of the 要点's question words.

    Why: the decisive detail often sits in the sentence after the rule (tuning part: fact coverage
    0.676 without it, 0.762 with it).
    """
    base = _overlap(units[i].text, weights)
    others = [(_overlap(u.text, weights) + _intent_fit(u.text, intents), j) for j, u in enumerate(units)
              if j != i and not _STEP.match(u.text.strip())]
    if not others:
        return set()
    best, j = max(others)
    return {j} if best >= KEY_EXTRA * max(base, 0.01) else set()


def _cites(hit: Hit, refs: set[tuple[str, str]]) -> bool:
    return (short_title(hit.chunk.title), hit.chunk.section) in refs


def _pick_key_point(question, hits, weights, intents):
    """(hit, unit index list) of the single best answering sentence among the first relevant passages."""
    best = None
    for rank, hit in enumerate(hits[:3]):
        units = answer_units(hit.chunk.text)
        for i, u in enumerate(units):
            body = u.text.strip()
            if _STEP.match(body) or len(body) < 8:
                continue
            lead = body.split("：", 1)[0] if _ENUMERATION.search(body) else body  # an enumeration scores by its rule
            score = max(_overlap(body, weights), _overlap(lead, weights)) + _intent_fit(lead, intents)
            score += RANK_PRIOR[rank]
            if hit.chunk.kind == "guide":
                score -= 0.15  # third-party experience states a conclusion only when nothing checked does
            if i == 0:  # an article states its rule first, exceptions after; a guide section opens with its answer
                score += 0.15 if hit.chunk.kind == "howto" else 0.1
            if best is None or score > best[0]:
                best = (score, hit, units, i)
    return best


def _basis_laws(key_hit: Hit | None, hits: list[Hit], chosen: list[Hit], weights: dict[str, float],
                intents: set[str]) -> list[Hit]:
    """The statutes for 依据, in order: those the 要点's guide section cites, then the relevant ones.

    A second statute among the first two hits is as often right as wrong further down (tuning: 86 % and
    73 % acceptable at ranks 1–2, about 55 % below): further down it is quoted only when it shares the
    question's words, or when the 要点's guide cites it and it gives what is asked (食品安全法第一百四十八条's
    十倍 for 过期食品能赔多少).
    """
    refs = set(cited_articles(key_hit.chunk.text)) if key_hit is not None and key_hit.chunk.kind == "howto" else set()
    laws = [h for h in hits if h.chunk.kind == "law" and _cites(h, refs)]
    first_law = next((h for h in chosen if h.chunk.kind == "law"), None)
    laws += [h for h in chosen if h.chunk.kind == "law" and h not in laws
             and (h is first_law or _passage_overlap(h, weights) >= LEXICAL_FLOOR)]
    rank_of = {id(h): r for r, h in enumerate(hits, 1)}
    return laws[:1] + [h for h in laws[1:] if rank_of[id(h)] <= LATER_BASIS_RANK
                       or _passage_overlap(h, weights) >= LATER_BASIS_OVERLAP
                       or (_cites(h, refs) and _carries(h, intents))]


def _basis_units(text: str, units: list[Sentence], done: set[int], weights: dict[str, float], intents: set[str],
                 take: int) -> set[int]:
    """Which sentences of a statute to quote. A short article is quoted whole — nothing decisive can be
    cut off — except that after the 要点 only the rest of its 款 and short details follow, not the
    article's other rules; a long one by its ``take`` sentences closest to the question."""
    if len(text) <= WHOLE_PASSAGE:
        if not done:
            return set(range(len(units)))
        clause = _clause_span(text, min(units[k].start for k in done), max(units[k].end for k in done))
        return {k for k, u in enumerate(units) if clause[0] <= u.start and u.end <= clause[1]
                or len(u.text) <= SHORT_DETAIL}
    overlap = {k: _overlap(u.text, weights) + _intent_fit(u.text, intents) for k, u in enumerate(units)}
    ranked = sorted((k for k in overlap if k not in done), key=lambda k: (overlap[k], -k), reverse=True)
    floor = max(0.0, BASIS_SHARE * max(overlap.values()))
    return {k for k in ranked[:take] if overlap[k] > floor} or ({0} if not done else set())


def _steps_source(question: str, intents: set[str], chosen: list[Hit], hits: list[Hit]) -> Hit | None:
    """The project guide section whose numbered steps answer "what do I do".

    The first relevant guide section with steps, else one a little further down still about this
    matter. When its heading asks how long or how much ("商家拖多久…算故意拖延" for "拖着不退款怎么办"),
    its steps restate that rule: the same guide's section that asks how is taken instead, if near.
    """
    asked = question_domains(question)
    nearby = [h for h in hits if h.chunk.kind == "howto" and _steps(h) and not (passage_domains(h) - asked)
              and chosen and h.closeness >= chosen[0].closeness - STEPS_MARGIN]
    guide = next((h for h in chosen if h.chunk.kind == "howto" and _steps(h)), None) or next(iter(nearby), None)
    if guide is not None and question_intents(guide.chunk.section) & {"time", "amount"} - intents:
        guide = next((h for h in nearby if h.chunk.source == guide.chunk.source
                      and not (question_intents(h.chunk.section) - {"how"} - intents)
                      and "how" in question_intents(h.chunk.section)), guide)
    return guide


def compose(question: str, retrieval: Retrieval, refuse_below: float, max_sentences: int = 4,
            uncovered: list[str] | None = None, k: int = 5) -> Answer:
    """The answer for ``question`` from ``retrieval``; ``uncovered`` are names the sources never mention.

    Quotes come from the first ``k`` hits; the rest of the retrieval (rank ≤ 10) is used only
    for the statute a guide section cites and for a guide's steps.
    """
    hits = retrieval.hits
    uncovered = uncovered or []
    gap = "资料中没有关于" + "、".join(f"『{t}』" for t in uncovered) + "的规定" if uncovered else ""
    if not hits or retrieval.confidence < refuse_below:
        text = (gap + "。" if gap else REFUSAL) + "下面列出最接近的资料，仅供参考。"
        return Answer(text, True, [], {"uncovered": uncovered})
    weights = _weights(retrieval.query_tokens)
    intents = question_intents(question)
    whole_lists = bool(_ASKS_LIST.search(question))
    chosen = relevant_hits(question, hits, k)
    if not chosen:
        return Answer(REFUSAL + "下面列出最接近的资料，仅供参考。", True, [], {"uncovered": uncovered})

    citations: dict[int, Citation] = {}  # id(hit) -> citation, numbered in order of first use

    def cite(hit: Hit, sentences: list[Sentence]) -> int:
        c = citations.get(id(hit))
        if c is None:
            c = citations[id(hit)] = Citation(len(citations) + 1, hit)
        for s in sentences:
            if all(s.start != t.start for t in c.sentences):
                c.sentences.append(s)
        c.sentences.sort(key=lambda s: s.start)
        return c.n

    lines: list[str] = []
    if gap:
        lines.append(gap + "；以下是可能适用的一般规定，仅供参考。")
    sections: dict = {"uncovered": uncovered, "key_point": None, "basis": [], "steps": []}

    # 要点
    key = _pick_key_point(question, chosen, weights, intents)
    used: dict[int, set[int]] = {}
    if key:
        _, hit, units, i = key
        picked = _with_qualifiers(units, {i} | _key_companion(units, i, weights, intents))
        quote = _quote(units, picked, hit.chunk.text, weights, whole_lists)
        bare = _BARE_ANSWER.match(quote[0].text) if hit.chunk.kind == "howto" else None
        if bare:
            first = quote[0]
            quote[0] = Sentence(first.text[bare.end():], first.start + bare.end(), first.end)
        n = cite(hit, quote)
        used[id(hit)] = picked
        body = _join(quote)
        note = f"（{KIND_LABEL['guide']}）" if hit.chunk.kind == "guide" else ""
        lines.append(f"要点：{note}{body}[{n}]")
        sections["key_point"] = {"n": n, "text": body}

    # 依据: statute text, the passages the key point's guide cites first
    laws = _basis_laws(key[1] if key else None, hits, chosen, weights, intents)
    budget = BASIS_CHARS
    basis_lines = []
    for hit in laws[:MAX_BASIS]:
        text = hit.chunk.text
        units = answer_units(text)
        if not units or budget <= 0:
            continue
        done = used.get(id(hit), set())
        take = max(1, max_sentences - 2) if hit is laws[0] else 1
        picked = _with_qualifiers(units, _basis_units(text, units, done, weights, intents, take)) - done
        if not picked:
            continue
        quote = _quote(units, picked, text, weights, whole_lists)
        size = sum(len(s.text) for s in quote)
        if basis_lines and size > budget:
            continue
        budget -= size
        n = cite(hit, quote)
        body = _join(quote)
        basis_lines.append(f"- {source_label(hit)}：{body}[{n}]")
        sections["basis"].append({"n": n, "text": body})
    if basis_lines:
        lines.append("依据：")
        lines.extend(basis_lines)

    # 怎么做: steps from the best project guide section about this matter
    if "how" in intents:
        guide = _steps_source(question, intents, chosen, hits)
        if guide is not None:
            steps = _steps(guide)[:MAX_STEPS]
            n = cite(guide, steps)
            lines.append("怎么做：")
            for k, s in enumerate(steps, 1):
                lines.append(f"{k}. {_inline(s.text)}[{n}]")
                sections["steps"].append({"n": n, "text": _inline(s.text)})

    # Third-party experience: shown apart, only when nothing of ours answers the ask
    if not citations:
        hit = chosen[0]
        units = answer_units(hit.chunk.text)
        if units:
            n = cite(hit, units[:2])
            lines.append(f"{KIND_LABEL.get(hit.chunk.kind, hit.chunk.kind)}：")
            lines.append(f"- {source_label(hit)}：{_join(units[:2])}[{n}]")
    return Answer("\n".join(lines), False, sorted(citations.values(), key=lambda c: c.n), sections)
