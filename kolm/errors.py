"""Errors kolm raises for problems the user can fix. The CLI prints them without a traceback."""

from __future__ import annotations


class KolmError(RuntimeError):
    """Bad input or an unmet precondition (missing file, wrong tokenizer...). The message names the culprit."""


class DiskFullError(KolmError):
    """A write failed for lack of space (or over a quota). The message names the folder, the room there and roughly
    how much the write needs, and how to go on (:func:`kolm.io.files.no_room_message`)."""
