"""Errors kolm raises for problems the user can fix. The CLI prints them without a traceback."""

from __future__ import annotations


class KolmError(RuntimeError):
    """Bad input or an unmet precondition (missing file, wrong tokenizer...). The message names the culprit."""
