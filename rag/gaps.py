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
from pathlib import Path

from .lexicon import tsv_pairs

# Latin-script tiers and programme names (VIP, PLUS, 88VIP, Prime); plain English words are not names.
_LATIN_NAME = re.compile(r"^(?:[a-z]*\d+[a-z]+\d*|[a-z]+\d+|vip|svip|plus|prime|pro)$", re.I)
# Chinese words that name a programme, a perk or a tariff: …险, …会员, …特权, …积分, …费率.
# Not …费: shoppers name ordinary costs that way (医药费) and the law speaks of them in other words (医疗费).
# Not …宝 / …卡: as many everyday things end so (充电宝, 支付宝, 购物卡) as programmes do; the
# programmes (准时宝, 余额宝, 省钱卡) are in the reviewed sector list below.
_NAMED_SUFFIX = re.compile(r"(?:险|会员|特权|积分|分期|费率|热线)$")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _jieba():
    from .keyword import _jieba as load

    return load()


@lru_cache(maxsize=256)
def _cut(question: str) -> tuple[str, ...]:
    """jieba's words of the question; cached because the name and the sector checks both need them."""
    return tuple(_jieba().cut(question))


_FEE = re.compile(r"[\u4e00-\u9fff]费$")
_CLAUSE = r"[^，。？！,?!；;]{0,8}?"  # the fee and the ask in one clause, a few characters apart
_ASKS_AMOUNT = r"多少|几个点|几成|怎么收|收多少|标准是|怎么算|按什么"


def _words(question: str) -> list[str]:
    """jieba's words, with a one-character name suffix joined back (碎屏 + 险 → 碎屏险)."""
    words: list[str] = []
    for w in _cut(question):
        if words and w == "险" and _CJK.search(words[-1]):
            words[-1] += w
        else:
            words.append(w)
    return words


def uncovered_terms(question: str, known: set[str] | dict) -> list[str]:
    """Names in the question that nothing in ``known`` (corpus vocabulary + lexicon keys) contains.

    A charge (…费) counts only when its own amount is asked, in the same clause: "要抽几个点的服务费"
    asks a tariff the sources don't set, while "花了几百医药费…还能多赔多少" asks what the law's
    医疗费 rule settles.
    """
    out: list[str] = []
    for word in _words(question):
        w = word.strip().lower()
        if len(w) < 2 or w in known or word in out:
            continue
        if _CJK.search(w):
            asks_amount = _FEE.search(w) and re.search(
                f"{re.escape(word)}{_CLAUSE}(?:{_ASKS_AMOUNT})|(?:{_ASKS_AMOUNT}){_CLAUSE}{re.escape(word)}", question)
            named = (_NAMED_SUFFIX.search(w) or asks_amount) and len(w) >= 3
        else:
            named = bool(_LATIN_NAME.match(w))
        if named:
            out.append(word.strip())
    return out


SECTORS_FILE = Path(__file__).parent / "data" / "sectors.tsv"


@lru_cache(maxsize=4)
def load_sectors(path: Path = SECTORS_FILE) -> dict[str, str]:
    """word → sector, for sectors whose own rules the corpus lacks (air tickets, insurance, 88VIP …).

    Why a reviewed list and not the vocabulary test above: 机票 or 酒店 do occur in the indexed
    shopper questions (about a side issue the law settles), so "known" can't tell that the
    sector's own rules — refund fees, bookings, premiums — are missing. The list was written
    without looking at any evaluation question; each word is checked absent from the law and
    guide texts (tests/test_answer.py).
    """
    return dict(tsv_pairs(path))


def _longest_first(sectors: dict[str, str]) -> list[str]:
    """Lower-cased words, longest first (退票费 before 退票)."""
    return sorted((w.lower() for w in sectors), key=len, reverse=True)


def _token_bounds(question: str) -> tuple[set[int], set[int]]:
    starts, ends, pos = set(), set(), 0
    for w in _cut(question):
        starts.add(pos)
        pos += len(w)
        ends.add(pos)
    return starts, ends


def uncovered_sectors(question: str, sectors: dict[str, str] | None = None) -> list[str]:
    """Sector words the question names, longest first, each beginning or ending where one of jieba's words does.

    Why a word boundary: 关税 must not fire inside 相关税费 (相关/税费). Why only one of the two:
    jieba glues neighbours onto a name (特价机票, 保价/费是), so both ends rarely line up.
    """
    words = _longest_first(load_sectors() if sectors is None else sectors)
    lower = question.lower()
    present = [w for w in words if w in lower]
    if not present:
        return []
    starts, ends = _token_bounds(question)
    taken: list[tuple[int, int]] = []
    out: list[str] = []
    for word in present:
        at = lower.find(word)
        while at >= 0:
            span = (at, at + len(word))
            if (at in starts or span[1] in ends) and not any(a < span[1] and span[0] < b for a, b in taken):
                taken.append(span)
                out.append(question[span[0]:span[1]])
                break
            at = lower.find(word, at + 1)
    return sorted(out, key=lambda w: lower.find(w.lower()))


# The goods of the 1995 《部分商品修理更换退货责任规定》 catalogue, whose 三包 terms (periods, main parts) the
# corpus lacks (corpus/README.md); phones, computers, audio-video and cars have rules of their own in it.
_CATALOGUE_GOODS = re.compile(r"空调|冰箱|洗衣机|热水器|微波炉|吸尘器|电风扇|油烟机|自行车|摩托车|缝纫机|电子琴|手表|钟表")
_ASKS_THREE_GUARANTEES = re.compile(r"三包|保修期|保修几年|保修多久|包修|包换期|主要部件|压缩机")
# Opening hours of a hotline or office: no source states any.
_ASKS_HOURS = re.compile(r"几点|营业时间|工作时间|办公时间|上班时间|接听时间|开放时间|(?:周末|节假日|晚上)有人")


def uncovered_asks(question: str) -> list[str]:
    """What the question asks that no source states, though its words are known: the 三包 terms of a
    catalogue good (空调压缩机保修几年), a hotline's hours."""
    out = []
    goods = _CATALOGUE_GOODS.search(question)
    if goods and _ASKS_THREE_GUARANTEES.search(question):
        out.append(goods.group(0) + "的三包期限")
    if _ASKS_HOURS.search(question):
        out.append("办公、接听时间")
    return out


def sector_terms(words: list[str], sectors: dict[str, str] | None = None) -> list[str]:
    """Sector words as the shopper reads them in the notice: the sector, then the words asked
    (『航空客运（机票、退票）』) — "资料中没有关于『经济舱』的规定" alone reads as if only that word were missing."""
    sectors = load_sectors() if sectors is None else sectors
    by_lower = {w.lower(): sector for w, sector in sectors.items()}
    grouped: dict[str, list[str]] = {}
    for w in words:
        grouped.setdefault(by_lower.get(w.lower(), ""), []).append(w)
    return [f"{sector}（{'、'.join(ws)}）" if sector else "、".join(ws) for sector, ws in grouped.items()]


def gaps(question: str, known: set[str] | dict) -> list[str]:
    """Everything the question names that the sources don't cover: sectors, asks no source
    settles, then unknown names."""
    out = sector_terms(uncovered_sectors(question)) + uncovered_asks(question)
    for term in uncovered_terms(question, known):
        if not any(term in w or w in term for w in out):
            out.append(term)
    return out
