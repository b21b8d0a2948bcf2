"""Aligned plain-text tables, as the commands print them to the terminal."""

from __future__ import annotations


def text_table(head: list[str], body: list[list[str]], left: int = 1, *, head_left: bool = False,
               solid_rule: bool = False) -> str:
    """Aligned columns two spaces apart under a ruled header.

    The first ``left`` columns are left-aligned, the rest right-aligned; ``head_left``: every header cell
    left-aligned. The rule under the header is a dash run per column, or one unbroken line with ``solid_rule``.
    """
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells: list[str], n_left: int) -> str:
        return "  ".join(c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(head, len(head) if head_left else left), *(line(cells, left) for cells in body)]
    lines.insert(1, "-" * len(lines[0]) if solid_rule else "  ".join("-" * w for w in widths))
    return "\n".join(lines)
