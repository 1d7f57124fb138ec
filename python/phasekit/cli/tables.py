"""Tables that fit the terminal: identifiers are never split, low-priority columns go
first when the width is short, and what was left out is said under the table.

The width is the console's: the terminal's, else ``$COLUMNS``, else 80 (Rich's rule).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

_BORDER = 3  # a column's padding (2) and its left border (1)


def console(stderr: bool = False) -> Console:
    """A console for tables: no highlighting, long lines left to the tables' own fitting."""
    return Console(highlight=False, soft_wrap=False, stderr=stderr)


@dataclass(frozen=True)
class Layout:
    """How a table's columns behave when the width is short.

    ``ids``: identifiers, never wrapped (``...`` only when one alone is wider than the
    terminal); ``drop``: columns to leave out, first listed first, until the table fits;
    ``numeric``: right-aligned, never wrapped; ``wrap``: text that wraps over lines
    before another column is left out (counted at most :data:`WRAP_WIDTH` wide).
    """

    ids: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    numeric: tuple[str, ...] = field(default=())
    wrap: tuple[str, ...] = field(default=())


WRAP_WIDTH = 20
"""The width a ``wrap`` column is counted at when a table is fitted (it takes more where
there is room)."""


def _natural(name: str, cells: Iterable[str]) -> int:
    return max([cell_len(name), *(cell_len(c) for c in cells)])


def shown_columns(
    columns: Sequence[str], rows: Sequence[Sequence[str]], layout: Layout, width: int
) -> list[str]:
    """The columns kept at ``width``: all, or all but the first of ``layout.drop``."""
    widths = {name: _natural(name, (r[i] for r in rows)) for i, name in enumerate(columns)}
    for name in layout.wrap:
        if name in widths:
            widths[name] = min(widths[name], WRAP_WIDTH)
    keep = list(columns)

    def total() -> int:
        return sum(widths[name] + _BORDER for name in keep) + 1

    for name in layout.drop:
        if total() <= width:
            break
        if name in keep:
            keep.remove(name)
    return keep


def fit_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    layout: Layout,
    width: int,
) -> RenderableType:
    """A table under a bold title that fits ``width`` columns of the terminal."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    keep = shown_columns(columns, cells, layout, width)
    index = [list(columns).index(name) for name in keep]
    table = Table()
    for i, name in zip(index, keep):
        if name in layout.numeric:
            natural = _natural(name, (r[i] for r in cells))
            table.add_column(name, justify="right", no_wrap=True, min_width=natural)
        elif name in layout.ids:
            natural = _natural(name, (r[i] for r in cells))
            table.add_column(
                name, no_wrap=True, overflow="ellipsis", min_width=min(natural, width // 2)
            )
        else:
            table.add_column(name, overflow="fold")
    for row in cells:
        table.add_row(*(Text(row[i]) for i in index))  # text as is: no markup
    parts: list[RenderableType] = [Text(title, style="bold"), table]
    hidden = [name for name in columns if name not in keep]
    if hidden:
        parts.append(Text(f"(not shown at this width: {', '.join(hidden)}; --json has all)"))
    return Group(*parts)
