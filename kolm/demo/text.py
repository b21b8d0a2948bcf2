"""Embedded demo text: what is on the machine once kolm's dependencies are installed, nothing downloaded.

- Korean: the Korean user guide that the ``kiwipiepy`` wheel ships (``kiwipiepy/documentation.md``) and the
  Korean docstrings of its modules. kiwipiepy is LGPL-3.0; the demo reads the installed files and does not copy
  them into kolm.
- English: the docstrings of Python's own standard library (the ``.py`` sources of the running interpreter),
  under the Python Software Foundation License.

Each paragraph is one document. Every 10th document is held out for evaluation; the rest is for training.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

from kolm.errors import KolmError
from kolm.vocab.chars import hangul_share

STDLIB_MODULES = ("argparse", "collections/__init__", "contextlib", "csv", "dataclasses", "datetime", "decimal",
                  "difflib", "email/message", "fractions", "functools", "gettext", "heapq", "http/client",
                  "inspect", "ipaddress", "json/__init__", "logging/__init__", "mailbox", "pathlib", "pickle",
                  "pydoc", "random", "shutil", "smtplib", "socket", "statistics", "string", "subprocess",
                  "tarfile", "tempfile", "textwrap", "threading", "typing", "unittest/case", "urllib/parse",
                  "uuid", "zipfile/__init__", "asyncio/events", "asyncio/tasks", "concurrent/futures/_base",
                  "configparser", "doctest", "enum", "imaplib", "optparse", "sched", "selectors", "ssl", "turtle")


def _docstrings(source: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                out.append(doc)
    return out


def _paragraphs(text: str, min_chars: int) -> list[str]:
    paras = []
    for block in re.split(r"\n\s*\n", text):
        lines = [x.strip() for x in block.splitlines()]
        if any(x.startswith((">>>", "...", "```", "|", "$ ")) for x in lines):
            continue  # code, tables and shell sessions are not prose
        p = " ".join(x.lstrip("#*-> ").strip() for x in lines if x)
        p = re.sub(r"\s+", " ", p).strip()
        if len(p) >= min_chars:
            paras.append(p)
    return paras


def korean_documents() -> tuple[list[str], str]:
    try:
        import kiwipiepy
    except ImportError:
        raise KolmError("kiwipiepy is not installed: it ships the demo's Korean text") from None
    root = Path(kiwipiepy.__file__).parent
    texts = []
    doc = root / "documentation.md"
    if doc.is_file():
        texts.append(doc.read_text(encoding="utf-8"))
    for f in sorted(root.glob("*.py")):
        texts += _docstrings(f.read_text(encoding="utf-8"))
    docs = [p for t in texts for p in _paragraphs(t, 30) if hangul_share(p) >= 0.3]
    seen: set[str] = set()
    docs = [d for d in docs if not (d in seen or seen.add(d))]  # type: ignore[func-returns-value]
    if len(docs) < 50:
        raise KolmError(f"found only {len(docs)} Korean paragraphs in {root}; the demo needs kiwipiepy's docs")
    return docs, f"kiwipiepy {getattr(kiwipiepy, '__version__', '?')}: {root}/documentation.md and module docstrings"


def english_documents(max_docs: int = 6000) -> tuple[list[str], str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for mod in STDLIB_MODULES:
        f = stdlib / f"{mod}.py"
        if f.is_file():
            for d in _docstrings(f.read_text(encoding="utf-8", errors="replace")):
                docs += [p for p in _paragraphs(d, 60) if p.isascii()]
    seen: set[str] = set()
    docs = [d for d in docs if not (d in seen or seen.add(d))]  # type: ignore[func-returns-value]
    if len(docs) < 200:
        raise KolmError(f"found only {len(docs)} English docstring paragraphs under {stdlib}")
    return docs[:max_docs], f"docstrings of {len(STDLIB_MODULES)} Python {sysconfig.get_python_version()} " \
                            f"standard-library modules ({stdlib})"


def split(docs: list[str]) -> tuple[list[str], list[str]]:
    """(train, held-out): every 10th document is held out."""
    return [d for i, d in enumerate(docs) if i % 10], [d for i, d in enumerate(docs) if i % 10 == 0]
