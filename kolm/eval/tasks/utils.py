"""Loader of kolm's local lm-evaluation-harness tasks: multiple-choice items from ``.jsonl`` files beside the YAML.

A task YAML names it as ``custom_dataset: !function utils.load`` with ``dataset_kwargs: {files: {SPLIT: FILE}}``;
lm-eval calls ``load(**metadata, **dataset_kwargs)``. Each line is ``{"question": str, "choices": [str, ...],
"answer": int}`` (more fields are kept). A bad line stops the task with its file and line number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def read_items(path: Path) -> list[dict[str, Any]]:
    """The items of one ``.jsonl`` file, checked (question text, at least two distinct choices, answer index)."""
    items = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
                raise ValueError(f"{where}: needs a non-empty 'question' string")
            choices = row.get("choices")
            if (not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip()
                                                                              for c in choices)
                    or len(set(choices)) != len(choices)):
                raise ValueError(f"{where}: 'choices' must be a list of at least two distinct non-empty strings")
            answer = row.get("answer")
            if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise ValueError(f"{where}: 'answer' must be the index of the right choice (0-{len(choices) - 1})")
            items.append(row)
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def load(files: dict[str, str] | None = None, **_: Any) -> Any:
    """``datasets.DatasetDict`` with one split per entry of ``files`` (paths relative to this folder)."""
    from datasets import Dataset, DatasetDict

    if not files:
        raise ValueError("dataset_kwargs.files: name the .jsonl file of each split, e.g. {test: items.jsonl}")
    return DatasetDict({split: Dataset.from_list(read_items(HERE / name)) for split, name in files.items()})
