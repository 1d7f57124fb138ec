"""Block rows: one catalog row for a block of containers.

A window run as blocks (:mod:`phasekit.workflow.blocks`) records one inline row per
block (entity ``block_<index>``, ``metadata.output_type`` ``block``). Its metadata holds
the block's containers as columns::

    {"output_type": "block", "window_id": "train",
     "table": "containers", "uri": "<URI of the window's containers table>",
     "first_row": 200,                       # the block's first row in that table
     "columns": {"container_id": ["portfolio_00200", ...],
                 "sharpe_ratio": [0.4, null, ...], ...}}   # one list per metric

With ``"rows": [200, 202, ...]`` the containers' rows of the table are those (the
block's other containers have their own items: a ``containers:`` pattern gives them a
``streaming`` flow), else ``first_row`` on. Where the window's tables are part sets
(:mod:`phasekit.workflow.blockwrite`), ``uri`` is the block's own part of the
``containers`` table (``.../containers.parts/part-000003.arrow``), ``first_row`` 0, and
``"parts"`` lists the block's part of each table (file, checksum, size, rows).

A container of a block is seen as the row it would have on its own
(:func:`container_rows`): entity ``<container_id>_results``, inline data
``{"table", "row", "uri"}`` (its row of the window's table), metadata
``{"container_id", "window_id", "output_type": "container_results", "metrics"}``; its id
is the block row's. :meth:`Catalog.list_items` with ``container=`` and
:meth:`Catalog.compare` find block containers this way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from phasekit.catalog.rows import ItemRow
from phasekit.errors import CatalogError, UnknownKey

BLOCK_OUTPUT = "block"
"""``metadata.output_type`` of a block's row."""
ID_COLUMN = "container_id"
ROWS_KEY = "rows"
"""Metadata key of a block row whose containers' rows of the table are not the ones
from ``first_row`` on (some of the block's containers have their own items instead)."""


def block_columns(item: ItemRow) -> Mapping[str, Sequence[Any]] | None:
    """The container columns of a block row (None for any other row, or a block row
    without containers); CatalogError when they are damaged."""
    meta = item.metadata
    columns = meta.get("columns")
    if meta.get("output_type") != BLOCK_OUTPUT or columns is None:
        return None
    ids = columns.get(ID_COLUMN) if isinstance(columns, Mapping) else None
    if not isinstance(ids, list) or not all(
        isinstance(v, list) and len(v) == len(ids) for v in columns.values()
    ):
        raise CatalogError(
            f"{item.label} is damaged: its columns are not lists of one length with "
            f"{ID_COLUMN!r} among them"
        )
    return columns


def container_metrics(item: ItemRow) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each container of a block row with its metrics (nothing for another row)."""
    columns = block_columns(item)
    if columns is None:
        return
    names = [n for n in columns if n != ID_COLUMN]
    values = [columns[n] for n in names]
    for i, cid in enumerate(columns[ID_COLUMN]):
        yield str(cid), {n: v[i] for n, v in zip(names, values)}


def container_rows(item: ItemRow, container: str | None = None) -> list[ItemRow]:
    """The containers of a block row (only ``container`` when given) as the rows they
    would have on their own (see the module docstring); none for another row."""
    columns = block_columns(item)
    if columns is None:
        return []
    ids = columns[ID_COLUMN]
    if container is None:
        indices: Sequence[int] = range(len(ids))
    else:
        indices = [i for i, c in enumerate(ids) if c == container]
    first = item.metadata.get("first_row", 0)
    rows = item.metadata.get(ROWS_KEY)
    if not isinstance(rows, list) or len(rows) != len(ids):
        rows = range(first, first + len(ids))
    names = [n for n in columns if n != ID_COLUMN]
    out = []
    for i in indices:
        cid = str(ids[i])
        out.append(
            replace(
                item,
                entity_name=f"{cid}_results",
                container_id=cid,
                inline_data={
                    "table": item.metadata.get("table"),
                    "row": rows[i],
                    "uri": item.metadata.get("uri"),
                },
                metadata={
                    "container_id": cid,
                    "window_id": item.window_id,
                    "output_type": "container_results",
                    "metrics": {n: columns[n][i] for n in names},
                },
                size_bytes=0,
            )
        )
    return out


def container_row(item: ItemRow, container: str) -> ItemRow:
    """Container ``container`` of ``item``: the row itself when it is that container's,
    its row within a block row; UnknownKey otherwise."""
    if item.container_id == container:
        return item
    found = container_rows(item, container)
    if not found:
        raise UnknownKey(
            f"{item.label} holds no container {container!r} (a block row holds the "
            "containers of its metadata.columns.container_id)"
        )
    return found[0]


def matches(
    item: ItemRow, entity: str | None, meta: Mapping[str, Any], text: Sequence[str]
) -> bool:
    """A container's row passes :meth:`Catalog.list_items`'s ``entity``, ``meta``
    (dotted path equals) and ``text`` (words in the metadata, case-insensitive) filters."""
    import json

    if entity is not None and item.entity_name != entity:
        return False
    for key, want in meta.items():
        value: Any = item.metadata
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value != want:
            return False
    if text:
        blob = json.dumps(item.metadata).lower()
        return all(word.lower() in blob for word in text)
    return True
