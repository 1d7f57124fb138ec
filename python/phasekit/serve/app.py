"""The HTTP API over a catalog: discovery, data access, compare, export, tokens.

:func:`create_app` builds the FastAPI application; :mod:`phasekit.serve.launch` runs it
on uvicorn. Every query goes through the catalog layer (:class:`~phasekit.catalog.Catalog`);
every file path comes from a catalog row and is checked to lie under the results folder
(:meth:`Catalog.item_path`). Errors are JSON ``{"error": class, "message": text}`` with
the text the CLI prints.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path as LocalPath
from typing import Annotated, Any, TypeVar

import pyarrow as pa
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from phasekit.catalog import PROCESS_STATUSES, Catalog, ItemRow, ProcessRow
from phasekit.catalog.encode import parse_meta, parse_since
from phasekit.catalog.export import source_format
from phasekit.catalog.tokens import list_tokens, revoke_token
from phasekit.catalog.uris import reference_scheme
from phasekit.crypt import Encryption, SealedReader, open_sealed
from phasekit.crypt.objects import open_object
from phasekit.errors import (
    AccessDenied,
    CatalogError,
    ConfigError,
    CorruptDataError,
    InvalidArgument,
    KeyUnavailable,
    MissingDependency,
    NotAuthenticated,
    PhasekitError,
    UnknownKey,
    UnsafePath,
)
from phasekit.report import render_report
from phasekit.serve import archive, models
from phasekit.serve.auth import FORBIDDEN, Access, Gate, unlimited
from phasekit.serve.data import (
    MEDIA_TYPES,
    OUTPUT_FORMATS,
    TABLE_SOURCES,
    arrow_stream_bytes,
    choose_format,
    encode,
    file_chunks,
    file_range,
    inline_json,
    open_table,
    parse_columns,
    parse_range,
    sent_in_pieces,
)
from phasekit.serve.maps import ServedMaps
from phasekit.serve.metrics import Metrics, MetricsMiddleware
from phasekit.serve.public import ServerPaths, public_text, public_value, server_paths
from phasekit.serve.verified import VerifiedFiles, unreadable
from phasekit.stores.partset import is_part_set, is_part_set_key

log = logging.getLogger("phasekit.serve")

T = TypeVar("T")
K = TypeVar("K")

MAX_PAGE = 1000
BIGINT = 2**63 - 1
"""The largest id or count the catalogs store (a signed 64-bit integer)."""
DEFAULT_PAGE = 100


class RangeError(InvalidArgument):
    """A ``Range`` that lies outside the file (416)."""


STATUS: tuple[tuple[type[PhasekitError], int], ...] = (
    (NotAuthenticated, 401),
    (AccessDenied, 403),
    (UnknownKey, 404),
    (RangeError, 416),
    (InvalidArgument, 400),
    (ConfigError, 400),
    (UnsafePath, 400),
    (CorruptDataError, 409),
    (CatalogError, 409),
    (KeyUnavailable, 409),
    (MissingDependency, 501),
)
"""HTTP status of each phasekit error (first match); anything else is 500."""
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": models.ErrorBody, "description": text}
    for code, text in (
        (400, "bad input (the message names it and what is allowed)"),
        (401, "no valid API token"),
        (403, "outside the token's scope"),
        (404, "no such run or item"),
        (409, "the stored data does not match its record"),
    )
}
BINARY = {"schema": {"type": "string", "format": "binary"}}
BEARER = HTTPBearer(auto_error=False, description="an API token: phk_<id>.<secret>")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
"""Declares the bearer scheme in the OpenAPI schema; the header is checked by :class:`Gate`."""


def status_of(exc: PhasekitError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def error_response(exc: PhasekitError, paths: ServerPaths) -> JSONResponse:
    """The JSON body of an error: the CLI's text without the server's paths
    (:func:`~phasekit.serve.public.public_text`); the full text goes to the log."""
    code = status_of(exc)
    body = models.ErrorBody(error=type(exc).__name__, message=public_text(str(exc), paths))
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    if code >= 500:
        log.error("request failed: %s", exc)
    else:
        log.info("request refused (%d): %s", code, exc)
    return JSONResponse(body.model_dump(), status_code=code, headers=headers)


# ------------------------------------------------------------------ cursors
def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError):
        raise InvalidArgument(
            f"cursor {raw[:60]!r} is not valid; allowed: a next_cursor from a previous page"
        ) from None


def paged(
    fetch: Callable[[K | None, int], Sequence[T]],
    keep: Callable[[T], bool],
    key: Callable[[T], K],
    start: K | None,
    limit: int,
) -> tuple[list[T], K | None]:
    """Up to ``limit`` rows that ``keep`` accepts, and the key to continue after them."""
    out: list[T] = []
    after = start
    while True:
        rows = fetch(after, limit + 1)
        for row in rows:
            if keep(row):
                out.append(row)
                if len(out) > limit:
                    return out[:limit], key(out[limit - 1])
        if len(rows) <= limit:
            return out, None
        after = key(rows[-1])


# ------------------------------------------------------------------ rows to bodies
def run_body(row: ProcessRow, paths: ServerPaths) -> models.Run:
    """The run's record; server paths in its config rewritten (:func:`public_value`)."""
    body = models.Run.model_validate(row, from_attributes=True)
    return body.model_copy(update={"config": public_value(row.config, paths)})


def item_body(catalog: Catalog, row: ItemRow, paths: ServerPaths) -> models.Item:
    """The item's record; a file's path relative to the results folder, never absolute,
    and server paths in its metadata rewritten (:func:`public_value`)."""
    location = "inline" if row.storage_type == "inline" else "file"
    rel: str | None = None
    if row.data_reference:
        location = reference_scheme(row.data_reference) or "unknown"
        try:
            path = row.path
            if path is not None and catalog.results_dir is not None:
                rel = path.relative_to(catalog.results_dir).as_posix()
        except (CatalogError, ValueError):
            rel = None
    own = ("location", "path", "metadata")  # ItemRow.path is the absolute path: not sent
    shared = {name: getattr(row, name) for name in models.Item.model_fields if name not in own}
    metadata = public_value(row.metadata, paths)
    return models.Item(**shared, location=location, path=rel, metadata=metadata)


def _stored_headers(item: ItemRow) -> dict[str, str]:
    headers = {"X-Phasekit-Size": str(item.size_bytes)}
    if item.checksum:
        headers["X-Phasekit-Checksum"] = item.checksum
    return headers


def object_bytes(
    catalog: Catalog, item: ItemRow, encryption: Encryption | None
) -> tuple[str, bytes, bool] | None:
    """``(key, bytes, decrypted)`` of an item stored as an object (results on object
    storage), else None: its bytes verified (:meth:`Catalog.read_object`) and, when it is
    encrypted, decrypted with ``encryption`` (:func:`phasekit.crypt.objects.open_object`;
    KeyUnavailable naming the key id without the right key)."""
    data = catalog.read_object(item)
    found = catalog.item_object(item) if data is not None else None
    if found is None or data is None:
        return None
    root, rel = found
    master = None if encryption is None else encryption.master
    plain = open_object(root, rel, data, master, item.label)
    return (rel, data, False) if plain is None else (rel, bytes(plain), True)


def _bytes_response(
    item: ItemRow, data: bytes, decrypted: bool, range_header: str | None
) -> Response:
    """``GET /items/{id}/file`` of an object's verified (and, ``decrypted``, decrypted)
    bytes (a ``Range`` honoured, counting plaintext bytes)."""
    headers = {**_stored_headers(item), "Accept-Ranges": "bytes"}
    if item.checksum:
        headers["ETag"] = f'"{item.checksum}"'
    if decrypted:
        headers["X-Phasekit-Decrypted"] = "true"  # size and checksum: the stored bytes
    if range_header is None:
        return Response(data, media_type="application/octet-stream", headers=headers)
    span = parse_range(range_header, len(data))
    if span is None:
        raise RangeError(
            f"Range {range_header!r} lies outside {item.label}, which has {len(data)} bytes"
        )
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return Response(
        data[start : end + 1],
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )


class Api:
    """The request handlers over one catalog (the routes are added by :func:`create_app`);
    ``encryption``: the master key that decrypts encrypted items (``/data``, ``/file``,
    export), streamed chunk by chunk."""

    def __init__(self, catalog: Catalog, encryption: Encryption | None = None) -> None:
        self.catalog = catalog
        self.encryption = encryption
        location = catalog.location
        self.paths = server_paths(catalog.results_dir, location.dialect, location.target)
        """The server's places, rewritten in what a client is sent (:mod:`.public`)."""
        self.gate = Gate(catalog)
        self.verified = VerifiedFiles()
        self.maps = ServedMaps()
        """Maps of the files sent as stored, kept between requests (:mod:`.maps`)."""

    # --------------------------------------------------------------- access
    def access(self, scope: str) -> Callable[..., Access]:
        def dependency(request: Request, credentials: Credentials = None) -> Access:
            # the raw header: a malformed one is a 401 of ours, not HTTPBearer's 403
            return self.gate.access(request.headers.get("authorization"), scope)

        return dependency

    def run_for(self, access: Access, run_id: str) -> ProcessRow:
        """A run the token may see (403 before the lookup otherwise; then 404)."""
        access.check_run(run_id)
        run = self.catalog.resolve_run(run_id)
        access.check_run(run.process_id)
        return run

    def item_for(self, access: Access, item_id: int) -> ItemRow:
        """An item the token may see; a limited token gets 403 for a missing item too."""
        try:
            item = self.catalog.get_item(item_id)
        except UnknownKey:
            if access.limited:
                raise AccessDenied(FORBIDDEN) from None
            raise
        if not access.may_see_item(item):
            raise AccessDenied(FORBIDDEN)
        return item

    def forget(self, item: ItemRow) -> None:
        """Drop the maps of a deleted item's file: its disk space is freed now, not when
        its map idles out."""
        try:
            path = self.catalog.item_path(item)
        except CatalogError:
            return  # a reference outside the results folder was never mapped
        if path is not None:
            self.maps.forget(path)

    # --------------------------------------------------------------- discovery
    def list_runs(
        self,
        access: Access,
        workflow: str | None,
        status: str | None,
        since: str | None,
        limit: int,
        cursor: str | None,
    ) -> models.Page[models.Run]:
        start = decode_cursor(cursor)
        since_at = parse_since(since) if since is not None else None

        def fetch(after: Any, n: int) -> list[ProcessRow]:
            before = None
            if after is not None:
                if not (isinstance(after, list) and len(after) == 2):
                    raise InvalidArgument("cursor is not a run cursor; pass a next_cursor of /runs")
                before = (parse_since(str(after[0])), str(after[1]))
            return self.catalog.list_processes(workflow, status, n, since=since_at, before=before)

        rows, nxt = paged(
            fetch,
            lambda r: access.may_see_run(r.process_id),
            lambda r: [r.started_at.isoformat(), r.process_id],
            start,
            limit,
        )
        return models.Page[models.Run](
            items=[run_body(r, self.paths) for r in rows],
            next_cursor=None if nxt is None else encode_cursor(nxt),
        )

    def item_page(
        self,
        access: Access,
        query: Callable[[int | None, int], list[ItemRow]],
        limit: int,
        cursor: str | None,
    ) -> models.Page[models.Item]:
        start = decode_cursor(cursor)
        if start is not None and (
            isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= BIGINT
        ):
            raise InvalidArgument("cursor is not an item cursor; pass a next_cursor of this list")
        rows, nxt = paged(query, access.may_see_item, lambda r: r.id, start, limit)
        return models.Page[models.Item](
            items=[item_body(self.catalog, r, self.paths) for r in rows],
            next_cursor=None if nxt is None else encode_cursor(nxt),
        )

    # --------------------------------------------------------------- data
    def item_data(
        self,
        item: ItemRow,
        fmt: str,
        columns: list[str] | None,
        limit: int | None,
    ) -> Response:
        headers = _stored_headers(item)
        if item.storage_type == "inline":
            if fmt != "json" or columns is not None or limit is not None:
                raise InvalidArgument(
                    f"{item.label} is an inline JSON value; allowed: format=json without "
                    "columns or limit"
                )
            return Response(
                inline_json(item.inline_data), media_type="application/json", headers=headers
            )
        found = self.catalog.item_object(item)
        if found is not None and is_part_set_key(found[1]):
            return self._object_part_set(item, fmt, columns, limit, headers)
        fetched = object_bytes(self.catalog, item, self.encryption)
        path = self.catalog.item_path(item) if fetched is None else LocalPath(fetched[0])
        if path is None:
            raise InvalidArgument(
                f"{item.label} has no bytes on disk ({item.data_reference}); allowed: file "
                "and inline items"
            )
        if fetched is None:
            self.verified.verify(self.catalog, item, path)
        folder = fetched is None and path.is_dir()
        kind = source_format(item, path) if not folder or is_part_set(path) else "parquet"
        sealed = None
        if fetched is None and not folder:
            sealed = open_sealed(path, self.encryption, item.label)
        if not folder and (kind, fmt, columns, limit, fetched, sealed) == (
            "arrow",
            "arrow",
            None,
            None,
            None,
            None,
        ):
            # already Arrow: sent as stored
            as_stored = arrow_stream_bytes(path, item.label, self.maps)
            if as_stored is not None:
                headers["Content-Length"] = str(as_stored.length)
                return StreamingResponse(
                    as_stored.pieces(), media_type=MEDIA_TYPES[fmt], headers=headers
                )
        body: Iterator[bytes]
        if kind in TABLE_SOURCES:
            plain: pa.NativeFile | None = None
            if fetched is not None:
                plain = pa.BufferReader(fetched[1])
            elif sealed is not None:  # decrypted chunk by chunk as the table is read
                plain = pa.PythonFile(io.BufferedReader(SealedReader(sealed)), mode="r")
            source = open_table(path, kind, columns, plain, item.label)
            body = encode(fmt, source, limit)
        elif kind == "json" and fmt == "json" and columns is None and limit is None:
            if fetched is not None:
                body = iter([fetched[1]])
            elif sealed is not None:
                body = sealed.chunks()
            else:
                size = path.stat().st_size
                body = file_chunks(path, 0, size - 1, item.checksum, item.label)
        else:
            raise InvalidArgument(
                f"{item.label} is a {kind or 'unknown'} file, not a table; allowed: "
                f"{', '.join(TABLE_SOURCES)} tables in any of {', '.join(OUTPUT_FORMATS)}, a json "
                "file as json; GET /items/{id}/file sends any file's bytes"
            )
        return StreamingResponse(sent_in_pieces(body), media_type=MEDIA_TYPES[fmt], headers=headers)

    def _object_part_set(
        self,
        item: ItemRow,
        fmt: str,
        columns: list[str] | None,
        limit: int | None,
        headers: dict[str, str],
    ) -> Response:
        """``/data`` of a part set on object storage: its manifest and parts fetched (each
        verified) into a temporary folder, read as a local part set, and the folder
        removed once the answer is sent."""
        cache = LocalPath(tempfile.mkdtemp(prefix="phasekit-serve-parts-"))
        try:
            local = self.catalog.item_local(item, cache)
            assert local is not None
            body = encode(fmt, open_table(local, "arrow", columns, None, item.label), limit)
        except BaseException:
            shutil.rmtree(cache, ignore_errors=True)
            raise
        return StreamingResponse(
            sent_in_pieces(body),
            media_type=MEDIA_TYPES[fmt],
            headers=headers,
            background=BackgroundTask(shutil.rmtree, cache, True),
        )

    def item_file(self, item: ItemRow, range_header: str | None) -> Response:
        fetched = object_bytes(self.catalog, item, self.encryption)
        if fetched is not None:
            return _bytes_response(item, fetched[1], fetched[2], range_header)
        path = self.catalog.item_path(item)
        if path is None or path.is_dir():
            what = "a folder" if path is not None else "not a file"
            raise InvalidArgument(
                f"{item.label} is {what}; allowed: items stored as one file "
                "(GET /items/{id}/data reads tables and folders)"
            )
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise unreadable(item, path, exc) from None
        if size != item.size_bytes:
            raise CorruptDataError(
                f"{item.label}: file {path} has {size} bytes, recorded {item.size_bytes}"
            )
        headers = {**_stored_headers(item), "Accept-Ranges": "bytes"}
        if item.checksum:
            headers["ETag"] = f'"{item.checksum}"'
        sealed = open_sealed(path, self.encryption, item.label)
        if sealed is not None:  # sent decrypted; Range counts plaintext bytes
            size = sealed.size
            headers["X-Phasekit-Decrypted"] = "true"  # size and checksum: the stored bytes

        def chunks_of(start: int, end: int) -> Iterator[bytes]:
            if sealed is not None:
                return sealed.chunks(start, end)
            return file_chunks(path, start, end, item.checksum, item.label)

        if range_header is None:
            headers["Content-Length"] = str(size)
            return StreamingResponse(
                sent_in_pieces(chunks_of(0, size - 1)),
                media_type="application/octet-stream",
                headers=headers,
            )
        span = parse_range(range_header, size)
        if span is None:
            raise RangeError(
                f"Range {range_header!r} lies outside {item.label}, which has {size} bytes"
            )
        start, end = span
        headers["Content-Length"] = str(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if sealed is None:  # views of a map of the file, not copies read in a thread
            return StreamingResponse(
                file_range(path, start, end, item.label, self.maps).pieces(),
                status_code=206,
                media_type="application/octet-stream",
                headers=headers,
            )
        return StreamingResponse(
            sent_in_pieces(chunks_of(start, end)),
            status_code=206,
            media_type="application/octet-stream",
            headers=headers,
        )

    def export(self, access: Access, run: ProcessRow) -> StreamingResponse:
        items = [i for i in self.catalog.list_items(run.process_id) if access.may_see_item(i)]
        members, skipped = archive.plan(self.catalog, run, items, self.encryption)
        headers = {"Content-Disposition": f'attachment; filename="{run.process_id}.tar"'}
        return StreamingResponse(
            sent_in_pieces(archive.stream(run, members, skipped)),
            media_type="application/x-tar",
            headers=headers,
        )

    def compare(self, access: Access, a: str, b: str) -> models.Comparison:
        run_a, run_b = self.run_for(access, a), self.run_for(access, b)
        result = self.catalog.compare(run_a.process_id, run_b.process_id)
        return models.Comparison(
            run_a=run_body(result.run_a, self.paths),
            run_b=run_body(result.run_b, self.paths),
            metrics=[
                models.MetricDiff(**m.to_dict())
                for m in result.metrics
                if access.token is None or access.token.allows_stage(m.stage_name)
            ],
            config=[
                models.ConfigDiff(**public_value(c.to_dict(), self.paths)) for c in result.config
            ],
        )


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Cursor = Annotated[
    str | None, Query(max_length=2000, description="next_cursor of the previous page")
]
Since = Annotated[
    str | None,
    Query(max_length=100, description="ISO-8601 time or an age such as 30m, 2h, 7d"),
]
Name = Annotated[str | None, Query(max_length=500)]
ItemId = Annotated[int, Path(ge=0, le=BIGINT)]


def _routes(api: Api, router: APIRouter, metrics: Metrics) -> None:
    read = Depends(api.access("read"))
    write = Depends(api.access("write"))
    admin = Depends(api.access("admin"))
    catalog = api.catalog

    @router.get(
        "/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}}
    )
    def get_metrics(access: Access = read) -> Response:
        """Prometheus metrics of this server (requests, latency, bytes sent)."""
        body, media = metrics.render()
        return Response(body, media_type=media)

    @router.get("/runs", response_model=models.Page[models.Run])
    def get_runs(
        access: Access = read,
        workflow: Name = None,
        status: Annotated[
            str | None, Query(json_schema_extra={"enum": list(PROCESS_STATUSES)})
        ] = None,
        since: Since = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> models.Page[models.Run]:
        """Runs, newest first, filtered by workflow type, status and start time."""
        return api.list_runs(access, workflow, status, since, limit, cursor)

    @router.get("/runs/{run_id}", response_model=models.Run)
    def get_run(run_id: Annotated[str, Path(max_length=500)], access: Access = read) -> models.Run:
        """One run (``latest`` names the newest)."""
        return run_body(api.run_for(access, run_id), api.paths)

    @router.get("/runs/{run_id}/items", response_model=models.Page[models.Item])
    def get_items(
        run_id: Annotated[str, Path(max_length=500)],
        access: Access = read,
        stage: Name = None,
        entity: Name = None,
        phase: Name = None,
        window: Name = None,
        container: Name = None,
        since: Since = None,
        meta: Annotated[
            list[str] | None, Query(description="KEY=VALUE metadata filters (metrics.sharpe=1.5)")
        ] = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> models.Page[models.Item]:
        """A run's items in id order, filtered like `phasekit ls`."""
        run = api.run_for(access, run_id)
        filters = parse_meta(meta)
        since_at = parse_since(since) if since is not None else None

        def query(after: int | None, n: int) -> list[ItemRow]:
            return catalog.list_items(
                run.process_id,
                stage,
                entity,
                since_at,
                filters,
                phase=phase,
                window=window,
                container=container,
                limit=n,
                after_id=after,
            )

        return api.item_page(access, query, limit, cursor)

    @router.get("/search", response_model=models.Page[models.Item])
    def search(
        q: Annotated[str, Query(min_length=1, max_length=500, description="words, all must occur")],
        access: Access = read,
        run: Name = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> models.Page[models.Item]:
        """Items whose metadata (keys and values) contains every word of ``q``."""
        words = q.split()
        if not words:
            raise InvalidArgument("q holds no words; allowed: one or more words")
        process = api.run_for(access, run).process_id if run is not None else None

        def query(after: int | None, n: int) -> list[ItemRow]:
            return catalog.list_items(process, limit=n, after_id=after, text=words)

        return api.item_page(access, query, limit, cursor)

    @router.get("/items/{item_id}", response_model=models.Item)
    def get_item(item_id: ItemId, access: Access = read) -> models.Item:
        """One item's record."""
        return item_body(catalog, api.item_for(access, item_id), api.paths)

    @router.get(
        "/items/{item_id}/data",
        response_class=StreamingResponse,
        responses={200: {"content": {media: BINARY for media in MEDIA_TYPES.values()}}},
    )
    def get_data(
        item_id: ItemId,
        access: Access = read,
        format: Annotated[
            str | None,
            Query(description="else by Accept", json_schema_extra={"enum": list(OUTPUT_FORMATS)}),
        ] = None,
        columns: Annotated[str | None, Query(max_length=5000, description="a,b,c")] = None,
        limit: Annotated[
            int | None, Query(ge=0, le=BIGINT, description="at most this many rows")
        ] = None,
        accept: Annotated[str | None, Header()] = None,
    ) -> Response:
        """An item's data, streamed: Arrow IPC stream by default; Parquet, CSV or JSON by
        ``Accept`` or ``?format=``; columns and a row limit for tables."""
        item = api.item_for(access, item_id)
        fmt = choose_format(format, accept)
        return api.item_data(item, fmt, parse_columns(columns), limit)

    @router.get(
        "/items/{item_id}/file",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/octet-stream": BINARY}},
            206: {"content": {"application/octet-stream": BINARY}, "description": "a byte range"},
            416: {"model": models.ErrorBody, "description": "the range lies outside the file"},
        },
    )
    def get_file(
        item_id: ItemId,
        access: Access = read,
        range: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Response:
        """A file item's bytes as stored; one ``Range: bytes=`` range gives 206."""
        return api.item_file(api.item_for(access, item_id), range)

    @router.delete("/items/{item_id}", response_model=models.Removal)
    def delete_item(item_id: ItemId, access: Access = write) -> models.Removal:
        """Delete an item: its file (unless other rows record it), then its row."""
        item = api.item_for(access, item_id)
        report = catalog.remove_items([item.id])
        if item.id in report.removed:
            api.forget(item)
        return models.Removal(
            removed=report.removed,
            freed_bytes=report.freed_bytes,
            failed=[{"id": i, "reason": public_text(r, api.paths)} for i, r in report.failed],
        )

    @router.get("/compare", response_model=models.Comparison)
    def compare(
        a: Annotated[str, Query(max_length=500)],
        b: Annotated[str, Query(max_length=500)],
        access: Access = read,
    ) -> models.Comparison:
        """The metrics and config differences of two runs."""
        return api.compare(access, a, b)

    @router.get(
        "/runs/{run_id}/export",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-tar": BINARY}}},
    )
    def export(run_id: Annotated[str, Path(max_length=500)], access: Access = read) -> Response:
        """A run's files, inline values and a manifest as one tar stream."""
        return api.export(access, api.run_for(access, run_id))

    @router.get(
        "/runs/{run_id}/report",
        response_class=Response,  # errors stay JSON in the schema; the page is text/html
        responses={
            200: {"content": {"text/html": {"schema": {"type": "string"}}}},
            501: {"model": models.ErrorBody, "description": "plotly is not installed"},
        },
    )
    def report(run_id: Annotated[str, Path(max_length=500)], access: Access = read) -> Response:
        """The run's HTML report (`phasekit report`): one offline page. A token limited to
        stages gets 403: the page draws every stage of the run."""
        run = api.run_for(access, run_id)
        if access.token is not None and access.token.stages is not None:
            raise AccessDenied(FORBIDDEN)
        label = public_text(catalog.url, api.paths)  # no server path on the page
        return HTMLResponse(render_report(catalog, run.process_id, catalog_label=label))

    @router.get("/tokens", response_model=list[models.Token])
    def get_tokens(access: Access = admin) -> list[models.Token]:
        """Every API token (never its secret); an admin token limited to some runs or
        stages may not manage tokens, which reach every run."""
        unlimited(access)
        return [models.Token(**t.to_dict()) for t in list_tokens(catalog)]

    @router.delete("/tokens/{token_id}", response_model=models.Token)
    def delete_token(
        token_id: Annotated[str, Path(max_length=100)], access: Access = admin
    ) -> models.Token:
        """Revoke an API token (an admin token without run or stage limits)."""
        unlimited(access)
        return models.Token(**revoke_token(catalog, token_id).to_dict())


def create_app(catalog: Catalog, encryption: Encryption | None = None) -> FastAPI:
    """The FastAPI application serving ``catalog`` (the caller keeps it open and closes it);
    ``encryption`` decrypts encrypted items (else reading one is a KeyUnavailable, 409)."""
    from phasekit import __version__

    api = Api(catalog, encryption)
    app = FastAPI(
        title="phasekit",
        version=__version__,
        description="Runs, stored items and their data from a phasekit catalog.",
        docs_url=None,
        redoc_url=None,
        lifespan=_sweeping(api.maps),
    )
    metrics = Metrics()
    router = APIRouter(responses=ERROR_RESPONSES)

    @app.get("/health", response_model=models.Health)
    def health() -> models.Health:
        """Whether the server can read its catalog (no token needed)."""
        catalog.list_processes(limit=1)
        return models.Health(status="ok", catalog=catalog.dialect, auth=api.gate.required())

    _routes(api, router, metrics)
    app.include_router(router)
    _handlers(app, api.paths)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.phasekit_api = api
    return app


SWEEP_SECONDS = 5.0
"""How often the server drops the maps of files it has not sent for a while."""


def _sweeping(maps: ServedMaps) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: idle maps dropped every :data:`SWEEP_SECONDS` while it runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                await asyncio.sleep(SWEEP_SECONDS)
                maps.sweep()

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()

    return lifespan


def _handlers(app: FastAPI, paths: ServerPaths) -> None:
    @app.exception_handler(PhasekitError)
    async def phasekit_error(request: Request, exc: PhasekitError) -> JSONResponse:
        return error_response(exc, paths)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(InvalidArgument(f"request is not valid: {problems}"), paths)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = models.ErrorBody(error="HTTPError", message=str(exc.detail))
        return JSONResponse(body.model_dump(), status_code=exc.status_code)
