"""Things a question names that the sources never mention: a platform programme (88VIP, 准时宝),
a fee schedule (保价费率), a member perk.

Why: the general rule retrieved for such a question (七日无理由 for "88VIP 退货特权") is not
what was asked. The answer must say plainly, before anything else, that the sources have
nothing on the named thing. A word counts as "named and uncovered" when it looks like the
name of a programme, product tier or fee, and neither the corpus text nor the shoppers'
lexicon knows it; everyday words (杯子, 碎了) are never flagged, because a question about a
cup is still answered by the general rules.
"""
from __future__ import annotations

import re
from functools import lru_cache

# Latin-script tiers and programme names (VIP, PLUS, 88VIP, Prime); plain English words are not names.
_LATIN_NAME = re.compile(r"^(?:[a-z]*\d+[a-z]+\d*|[a-z]+\d+|vip|svip|plus|prime|pro)$", re.I)
# Chinese words that name a programme, a perk or a tariff: …宝, …卡, …险, …会员, …特权, …积分, …费率.
# Not …费: shoppers name ordinary costs that way (医药费) and the law speaks of them in other words (医疗费).
_NAMED_SUFFIX = re.compile(r"(?:宝|卡|险|会员|特权|积分|分期|费率|热线)$")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _jieba():
    from .keyword import _jieba as load

    return load()


_FEE = re.compile(r"[\u4e00-\u9fff]费$")
_ASKS_AMOUNT = re.compile(r"多少|几个点|几成|怎么收|收多少|标准是")


def _words(question: str) -> list[str]:
    """jieba's words, with a one-character name suffix joined back (准时 + 宝 → 准时宝)."""
    words: list[str] = []
    for w in _jieba().cut(question):
        if words and len(w) == 1 and w in "宝卡险" and _CJK.search(words[-1]):
            words[-1] += w
        else:
            words.append(w)
    return words


def uncovered_terms(question: str, known: set[str] | dict) -> list[str]:
    """Names in the question that nothing in ``known`` (corpus vocabulary + lexicon keys) contains.

    A charge (…费) counts only when its amount is asked: "服务费要抽几个点" asks a tariff the
    sources don't set, while "医药费能赔吗" is answered by the law's 医疗费.
    """
    out: list[str] = []
    asks_amount = bool(_ASKS_AMOUNT.search(question))
    for word in _words(question):
        w = word.strip().lower()
        if len(w) < 2 or w in known or word in out:
            continue
        if _CJK.search(w):
            named = (_NAMED_SUFFIX.search(w) or (asks_amount and _FEE.search(w))) and len(w) >= 3
        else:
            named = bool(_LATIN_NAME.match(w))
        if named:
            out.append(word.strip())
    return out
