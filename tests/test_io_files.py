"""kolm.io.files' atomic writers and kolm.tables' text table: what every writer and every printed table relies on."""

from __future__ import annotations

import os

import pytest

from kolm.io.files import atomic_path, atomic_write_bytes, atomic_write_text, temp_name
from kolm.tables import text_table


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    atomic_write_text(path, "new 한국어", fsync=True)
    assert path.read_text(encoding="utf-8") == "new 한국어"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_temporary_names(tmp_path):
    assert temp_name(tmp_path / "x.npy") == tmp_path / "x.npy.tmp"
    assert temp_name(tmp_path / "r.html", unique=True) == tmp_path / f".r.html.tmp-{os.getpid()}"


def test_text_table_alignment_and_rules():
    head, body = ["name", "n"], [["a", "10"], ["long", "2"]]
    assert text_table(head, body, left=1) == "name   n\n----  --\na     10\nlong   2"
    assert text_table(head, body, left=1, head_left=True).splitlines()[0] == "name  n "
    assert text_table(head, body, left=1, solid_rule=True).splitlines()[1] == "-" * 8
    assert text_table(head, body, left=2).splitlines()[2] == "a     10"
