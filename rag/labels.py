"""Words shown to shoppers that several modules need: one place, so the CLI, the web app,
the composer and the LLM path can never drift apart.

Kinds of documents:
- ``law``: statutes, regulations, rules and judicial interpretations (the basis of every answer);
- ``howto``: guides written by this project, every factual sentence resting on a named corpus
  article (``tests/test_guides.py`` checks the references and figures);
- ``guide``: third-party experience articles, not checked.
"""
from __future__ import annotations

KIND_LABEL = {"law": "法律依据", "howto": "办事指南（依据法条整理）", "guide": "经验指南（未经核实）"}
KINDS = tuple(KIND_LABEL)
REFUSAL = "资料中没有找到能回答这个问题的依据。"
BODY_SECTION = "正文"  # the section name of text before a document's first heading


def kind_label(kind: str) -> str:
    return KIND_LABEL.get(kind, kind or "其他")


def section_label(section: str) -> str:
    """The section as shown after a title: nothing for text before the first heading."""
    return "" if section in ("", BODY_SECTION) else section
