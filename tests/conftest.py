"""Shared fixtures: one real index of the shipped corpus per test session.

Building it embeds ~940 chunks with the real model (about a minute on two
cores), so it is built once and copied where a test needs to change it.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from rag.config import REPO_ROOT, Settings

OUTPUT_DIR = REPO_ROOT / "test-output"


@pytest.fixture(scope="session")
def shipped_settings(tmp_path_factory) -> Settings:
    from rag.store import build_index

    index_dir = tmp_path_factory.mktemp("index")
    s = Settings().with_(corpus_dir=REPO_ROOT / "corpus", index_dir=index_dir)
    build_index(s)
    return s


@pytest.fixture(scope="session")
def assistant(shipped_settings):
    from rag.pipeline import Assistant

    return Assistant(shipped_settings)


@pytest.fixture
def writable_kb(shipped_settings, tmp_path) -> Settings:
    """A private copy of corpus + index that a test may add to, break or rebuild."""
    corpus = tmp_path / "corpus"
    index = tmp_path / "index"
    shutil.copytree(shipped_settings.corpus_dir, corpus)
    shutil.copytree(shipped_settings.index_dir, index, ignore=shutil.ignore_patterns(".lock"))
    return shipped_settings.with_(corpus_dir=corpus, index_dir=index)


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR


def write_corpus(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def corpus(tmp_path) -> Path:
    """An empty knowledge-base folder with laws/ and guides/."""
    root = tmp_path / "corpus"
    (root / "laws").mkdir(parents=True)
    (root / "guides").mkdir()
    return root


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@contextmanager
def raises_naming(rel: str, *words: str):
    """pytest.raises(DocumentError), plus: the message starts with the file's name and contains words."""
    from rag.documents import DocumentError

    with pytest.raises(DocumentError) as info:
        yield info
    msg = str(info.value)
    assert msg.startswith(f"{rel}: "), msg
    for w in words:
        assert w in msg, msg


def free_port() -> int:
    """A free local TCP port for a test server."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_kb(settings: Settings, root: Path, **changes) -> Settings:
    """``settings`` pointed at a copy of its corpus and index under ``root`` (a test may change both)."""
    shutil.copytree(settings.corpus_dir, root / "corpus")
    shutil.copytree(settings.index_dir, root / "index", ignore=shutil.ignore_patterns(".lock"))
    return settings.with_(corpus_dir=root / "corpus", index_dir=root / "index", **changes)


def admin_server(settings: Settings, root: Path, password: str):
    """A real server (API + web app) on a private copy of the knowledge base, with an administrator password.

    Returns ``(running, kb_settings)``; the caller closes ``running``.
    """
    from rag.auth import AdminPassword, hash_password
    from ui.server import serve

    kb = private_kb(settings, root)
    return serve(kb, port=free_port(), block=False, admin=AdminPassword(hash_password(password))), kb
