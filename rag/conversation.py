"""Follow-up questions: a turn that lacks its subject is retrieved together with the earlier turns.

Why: shoppers ask "网上买的衣服不喜欢能退吗" and then "那运费谁出？" or "如果吊牌剪了呢？".
Retrieved alone, the follow-up finds freight or tag rules of any kind, or nothing; the
conversation's matter (a 7-day return of clothes) is in the earlier turns.

Without an LLM (``resolve_turn``): a turn that *lacks a subject* (opens with 那/如果/另外…, points
back with 这种情况/这样…, ends in 呢, or is a few words like 赔多少/运费谁出) is retrieved with a
query made of its own words first, then the previous question, back to the last question that
had its own subject (the conversation's matter). A real change of topic must still win: the
turn is also retrieved alone (both query vectors come from one encoder call), and when it
retrieves confidently on its own — at least ``STAND_ALONE`` confidence and not clearly less
than with the earlier turns — it stands alone; so does a turn that is merely short (no pointer
back) and that the sources do not answer on its own (a question from elsewhere). The thresholds were chosen on the tuning part of
``eval/dialogues.jsonl`` (eval/README.md).

With an LLM (``rewrite_with_llm``, only when the caller lets the LLM be used): the LLM rewrites
the turn into one standalone question from the conversation; retrieval and the answer use that
question, and the JSON shows it as ``rewritten_question``. A failed or empty rewrite falls back
to the rule above.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import time

from .retrieve import Retrieval

log = logging.getLogger(__name__)

# Opening words that continue the previous turn ("那运费谁出", "如果吊牌剪了呢", "可是商家不认").
# 另外/还有/对了/换个问题 are not among them: they announce another matter, which must stand on its own words.
_OPENERS = re.compile(r"^(那|那么|如果|要是|假如|万一|然后|可是|但是|但|而且|并且|再|又|也|还|现在|"
                      r"这|它|他们|对方|同样)")
# Words that point back at something said before.
_POINTERS = re.compile(r"这种|这样|那样|这个|那个|这些|那些|这家|那家|上面|刚才|前面|上述|此事|它|他家|同样的")
_ENDS_NE = re.compile(r"呢\s*[？?。!！…]*\s*$")
_PUNCT = re.compile(r"[\s\W_]+", re.U)
SHORT_TURN = 12  # characters (no punctuation): "运费谁出？", "能赔多少钱？", "多久能退款？"
MAX_CONTEXT_TURNS = 3  # the previous question, and back to the conversation's matter
ANCHOR_MIN = 10  # an earlier question this long that does not point back names the conversation's matter
# A follow-up-looking turn stands alone when its own retrieval is at least this confident and
# not more than STAND_ALONE_MARGIN less confident than with the earlier turns (tuning dialogues).
STAND_ALONE = 0.95
STAND_ALONE_MARGIN = 0.0
ALONE_WEIGHT = 0.5  # the turn's own ranking, fused into the in-context one (``fuse``)

REWRITE_PROMPT = (
    "你负责改写网购售后咨询中的追问。根据之前的对话，把用户最后一句话改写成一个完整、独立的问题："
    "补上它省略的主语、商品和情形（例如“那运费谁出？”→“网上买的衣服七天无理由退货，退货运费谁出？”），"
    "不要回答问题，不要添加对话里没有的事实。如果最后一句已经是完整的问题，或者换了新话题，就原样输出。"
    "只输出改写后的问题，一行，不加引号和解释。"
)


@dataclasses.dataclass
class Turn:
    """How one turn was retrieved: ``how`` is "alone", "context" (with the earlier turns) or "llm"."""

    question: str
    query: str  # the text retrieved with (and given to the composer)
    how: str = "alone"
    context: list[str] = dataclasses.field(default_factory=list)  # earlier questions joined after the turn
    rewritten: str | None = None  # the LLM's standalone question
    retrieval: Retrieval | None = None
    embed_ms: float = 0.0
    retrieve_ms: float = 0.0
    rewrite_ms: float = 0.0
    confidence_alone: float | None = None
    confidence_context: float | None = None

    def as_json(self) -> dict:
        return {"how": self.how, "query": self.query, "context": self.context}


def user_questions(history) -> list[str]:
    """The shopper's earlier questions, oldest first (plain strings count as questions)."""
    out = []
    for t in history or []:
        if isinstance(t, str):
            text = t
        elif isinstance(t, dict) and t.get("role") == "user":
            text = t.get("content")
        else:
            continue
        if isinstance(text, str) and text.strip():
            out.append(text.strip())
    return out


def points_back(question: str) -> bool:
    """Opens like a continuation (那…, 如果…), points at something said before (这种情况), or ends in 呢."""
    q = question.strip()
    return bool(_OPENERS.match(_PUNCT.sub("", q))) or bool(_POINTERS.search(q)) or bool(_ENDS_NE.search(q))


def lacks_subject(question: str) -> bool:
    """Whether a turn reads like a follow-up that leaves its matter to the conversation: it points
    back, or it is a few words ("运费谁出？", "多久之内必须退钱？"); whether it really does is then
    decided by how confidently it retrieves on its own (``resolve_turn``)."""
    return points_back(question) or len(_PUNCT.sub("", question)) <= SHORT_TURN


def context_for(questions: list[str]) -> list[str]:
    """The previous question, and back to the last one that had its own subject (newest first)."""
    ctx: list[str] = []
    for prev in reversed(questions[-MAX_CONTEXT_TURNS:]):
        if prev not in ctx:
            ctx.append(prev)
        if not points_back(prev) and len(_PUNCT.sub("", prev)) >= ANCHOR_MIN:
            break
    return ctx


def combined_query(question: str, context: list[str], max_chars: int) -> str:
    """This turn's own words first, then the earlier questions: "那运费谁出？ 网上买的衣服不喜欢能退吗"."""
    text = question
    for prev in context:
        if len(text) + 1 + len(prev) > max_chars:
            break
        text += " " + prev
    return text


def resolve_turn(question: str, history, retriever, k: int, mode: str | None, max_chars: int,
                 query_vector=None, refuse_below: float = 0.5) -> Turn:
    """Retrieval for one turn of a conversation, by the rule in the module docstring."""
    questions = user_questions(history)
    if not questions or not lacks_subject(question):
        return Turn(question, question)
    context = context_for(questions)
    query = combined_query(question, context, max_chars)
    if query == question:
        return Turn(question, question)
    dense = (mode or retriever.settings.mode) != "keyword"
    t0 = time.perf_counter()
    if dense:
        if query_vector is None:
            v_alone, v_ctx = retriever.query_vectors([question, query])
        else:
            v_alone, v_ctx = query_vector, retriever.query_vectors([query])[0]
    else:
        v_alone = v_ctx = None
    t1 = time.perf_counter()
    alone = retriever.retrieve(question, k=2 * k, mode=mode, query_vector=v_alone)
    with_ctx = retriever.retrieve(query, k=2 * k, mode=mode, query_vector=v_ctx)
    t2 = time.perf_counter()
    turn = Turn(question, query, "context", context, retrieval=fuse(with_ctx, alone, k), embed_ms=(t1 - t0) * 1000,
                retrieve_ms=(t2 - t1) * 1000, confidence_alone=alone.confidence,
                confidence_context=with_ctx.confidence)
    # Stands alone: confident on its own; or merely short, not pointing back, and outside what the
    # sources answer ("如何学习 Python 编程？"): the conversation's words must not make it look answerable.
    if ((alone.confidence >= STAND_ALONE and alone.confidence >= with_ctx.confidence - STAND_ALONE_MARGIN)
            or (alone.confidence < refuse_below and not points_back(question))):
        turn.query, turn.how, turn.context = question, "alone", []
        turn.retrieval = dataclasses.replace(alone, hits=alone.hits[:k])
    return turn


def fuse(with_context: Retrieval, alone: Retrieval, k: int, rrf_k: int = 60) -> Retrieval:
    """The in-context ranking, with the turn's own ranking counted at ``ALONE_WEIGHT`` (reciprocal ranks).

    Why both: the earlier questions give the matter, but their words can also pull the ranking
    towards what was asked before ("那运费谁出？" → "如果吊牌剪了呢？" is about tags, not freight);
    the turn's own list keeps its own ask in play. Confidence stays the in-context one.
    """
    scores: dict[tuple, float] = {}
    hits: dict[tuple, object] = {}
    for ranking, weight in ((with_context.hits, 1.0), (alone.hits, ALONE_WEIGHT)):
        for r, h in enumerate(ranking):
            key = (h.chunk.source, h.chunk.start, h.chunk.end)
            hits.setdefault(key, h)  # the in-context hit (its cosines are to the query the composer sees)
            scores[key] = scores.get(key, 0.0) + weight / (rrf_k + r + 1)
    order = sorted(scores, key=lambda key: -scores[key])[:k]
    fused = [dataclasses.replace(hits[key], score=scores[key], rank=r + 1) for r, key in enumerate(order)]
    return dataclasses.replace(with_context, hits=fused)


def rewrite_with_llm(question: str, history, config, max_chars: int) -> str | None:
    """One standalone question written by the LLM from the conversation; None when it fails."""
    from .llm import LLMError, complete

    lines = []
    for t in (history or [])[-8:]:
        if isinstance(t, str):
            role, text = "user", t
        elif isinstance(t, dict):
            role, text = t.get("role"), t.get("content")
        else:
            continue
        if role not in ("user", "assistant") or not isinstance(text, str) or not text.strip():
            continue
        text = " ".join(text.split())
        lines.append(("用户：" if role == "user" else "客服：") + (text[:200] + "…" if len(text) > 200 else text))
    if not lines:
        return None
    messages = [{"role": "system", "content": REWRITE_PROMPT},
                {"role": "user", "content": "之前的对话：\n" + "\n".join(lines) + f"\n\n用户最后一句：{question}"}]
    short = dataclasses.replace(config, stream=False, max_tokens=min(int(config.max_tokens), 200), temperature=0.0)
    try:
        text = complete(short, messages)
    except LLMError as e:
        log.warning("follow-up rewrite failed (%s): %s", e.kind, e)
        return None
    text = re.sub(r"<think>.*?</think>", "", text or "", flags=re.S).strip()
    text = text.splitlines()[0].strip() if text else ""
    text = re.sub(r"^(改写后的问题|改写|问题)[:：]\s*", "", text).strip(" \"'“”「」")
    if not text or len(text) > max_chars:
        return None
    return text
