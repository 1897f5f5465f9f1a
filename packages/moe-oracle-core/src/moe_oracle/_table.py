"""Plain-text tables for the CLI and ``SelectionReport``: columns that fit a terminal width.

Every column but the last is as wide as its widest cell; the last column wraps into the width
that is left (at least ``MIN_LAST`` characters). A row may carry notes: whole lines printed under
it, indented, wrapped to the width. ``width=None`` wraps nothing (the CLI's ``--wide``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

WIDTH = 100
MIN_LAST = 24
_GAP = "  "


def wrap(text: str, width: int | None, *, indent: str = "", subsequent: str | None = None) -> list[str]:
    """``text`` as lines of at most ``width`` characters (one line when ``width`` is None)."""
    later = indent if subsequent is None else subsequent
    if width is None or len(indent) + len(text) <= width:
        return [indent + text]
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=later,
                         break_long_words=False, break_on_hyphens=False) or [indent]


def format_table(rows: Sequence[Sequence[str]], *, width: int | None = WIDTH,
                 notes: Sequence[Sequence[str]] | None = None, note_indent: int | None = None,
                 note_hang: int = 0) -> list[str]:
    """Render ``rows`` (the first is the header) as lines.

    Parameters
    ----------
    rows : rows of equal length; cells are plain strings.
    width : the most characters a line may have, or None for no wrapping.
    notes : per row, extra lines printed under it (``notes[i]`` belongs to ``rows[i]``).
    note_indent : where notes start; None puts them at the last column, two spaces in.
    note_hang : extra indent of a note's wrapped continuation lines.
    """
    ncols = len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(ncols - 1)]
    offset = sum(widths) + len(_GAP) * (ncols - 1)
    last_width = None if width is None else max(width - offset, MIN_LAST)
    pad = " " * offset
    start = offset + len(_GAP) if note_indent is None else note_indent
    lines: list[str] = []
    for i, row in enumerate(rows):
        head = _GAP.join(row[c].ljust(widths[c]) for c in range(ncols - 1)) + _GAP
        last = wrap(row[-1], last_width) if row[-1] else [""]
        lines.append((head + last[0]).rstrip())
        lines.extend((pad + more).rstrip() for more in last[1:])
        for note in (notes[i] if notes is not None and i < len(notes) else ()):
            lines.extend(wrap(note, width, indent=" " * start, subsequent=" " * (start + note_hang)))
    return lines
