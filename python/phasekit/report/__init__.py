"""Reports: one self-contained HTML page per run (``phasekit report RUN``).

:func:`render_report` reads a run through the catalog (:mod:`.data`), builds its sections
(:mod:`.sections`: equity curves of the best sets in and out of sample, a parameter
heatmap of two-parameter grids, in-sample against out-of-sample, walk-forward windows,
Monte Carlo distributions, the memory and spill timeline) and renders them with Plotly
inlined (:mod:`.html`), so the page works offline and fetches nothing. Plotly comes with
the ``report`` extra (``pip install 'phasekit[report]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from phasekit.paths import write_private_file
from phasekit.report.data import CatalogSource, RunData, open_source, read_run
from phasekit.report.html import page
from phasekit.report.sections import Section, build_sections

log = logging.getLogger(__name__)


def render_report(source: CatalogSource, run_id: str, catalog_label: str | None = None) -> str:
    """The HTML report of run ``run_id`` (``latest`` for the newest) of the catalog
    ``source``: an open :class:`~phasekit.catalog.Catalog` (left open), a results folder,
    a catalog file or a catalog URL. ``catalog_label``: shown as the catalog instead of
    its URL (the server's page names no path of the server).

    Raises :class:`phasekit.errors.UnknownKey` naming a run the catalog does not hold,
    :class:`phasekit.errors.MissingDependency` without plotly.
    """
    catalog, opened = open_source(source)
    try:
        data = read_run(catalog, run_id)
    finally:
        if opened:
            catalog.close()
    if catalog_label is not None:
        data = dataclasses.replace(data, catalog_url=catalog_label)
    return page(data, build_sections(data))


def write_report(source: CatalogSource, run_id: str, out: str | os.PathLike[str]) -> Path:
    """Write :func:`render_report`'s page to ``out`` (mode 0600); returns the path written."""
    text = render_report(source, run_id)
    path = Path(out)
    write_private_file(path, text.encode("utf-8"))  # mode 0600, like every file phasekit writes
    log.info("report of run %s written to %s (%d bytes)", run_id, path, len(text))
    return path


__all__ = ["CatalogSource", "RunData", "Section", "render_report", "write_report"]
