"""Refs and their URIs, and the validation of names that become paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phasekit.errors import InvalidArgument
from phasekit.stores import FileStore, HybridStore, MemoryStore, StreamStore
from phasekit.stores.names import check_name
from phasekit.stores.ref import Ref, file_uri, named_uri, parse_uri
from stores_util import store_backend  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("store_backend")

HOSTILE = [
    "",
    ".",
    "..",
    "../etc",
    "a/../b",
    "x..y",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "C:evil",
    ".hidden",
    "nul\x00byte",
    "tab\there",
    "new\nline",
    "bell\x07",
    "rtl\u202eoverride",
    " padded",
    "padded ",
    "x" * 201,
    ".name.abc.phasekit-tmp",
    "name.phasekit-tmp",
]


@pytest.mark.parametrize("name", HOSTILE, ids=lambda n: repr(n)[:30])
def test_hostile_names_are_rejected_with_field_and_value(name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_name("key", name)
    message = str(err.value)
    assert message.startswith("key ")
    assert repr(name)[:40] in message  # long names are quoted up to 80 characters
    assert "allowed" in message


@pytest.mark.parametrize("name", [1, None, b"bytes", ["a"]])
def test_non_string_names_are_rejected(name: object) -> None:
    with pytest.raises(InvalidArgument, match="must be a string"):
        check_name("phase", name)


@pytest.mark.parametrize(
    "name", ["a", "results.v2", "portfolio_007", "k-1=2,3", "été", "with space"]
)
def test_ordinary_names_pass(name: str) -> None:
    assert check_name("key", name) == name


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "nul\x00"])
def test_every_store_refuses_hostile_keys_before_touching_disk(tmp_path: Path, name: str) -> None:
    stores = [
        MemoryStore(),
        FileStore(tmp_path / "f"),
        HybridStore(1000, tmp_path / "h"),
        StreamStore(tmp_path / "s"),
    ]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for store in stores:
        with pytest.raises(InvalidArgument, match="key"):
            store.put(name, {"a": 1})
        with pytest.raises(InvalidArgument, match="key"):
            store.get(name)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and "phasekit-spill" not in str(p)] == []
    for store in stores:
        store.close()


@pytest.mark.parametrize("field", ["run", "phase"])
def test_hostile_run_and_phase_are_rejected(tmp_path: Path, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        MemoryStore(**{field: "../up"})
    with pytest.raises(InvalidArgument, match=field):
        FileStore(tmp_path, **{field: "a/b"})


def test_container_names_are_checked(tmp_path: Path) -> None:
    with HybridStore(100, tmp_path) as store, pytest.raises(InvalidArgument, match="container"):
        store.container("../x", 10)


def test_named_uri_round_trip_with_encoded_characters() -> None:
    uri = named_uri("memory", ("run 1", "phase%2", "ns", "key=a,b"))
    assert uri == "memory://run%201/phase%252/ns/key%3Da%2Cb"
    parsed = parse_uri(uri)
    assert parsed.scheme == "memory"
    assert parsed.names == ("run 1", "phase%2", "ns", "key=a,b")


def test_file_uri_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a b" / "c%d.arrow"
    uri = file_uri(path)
    assert uri.startswith("file:///")
    assert parse_uri(uri).path == path


@pytest.mark.parametrize(
    "uri,match",
    [
        ("http://x/y/z", "unknown scheme"),
        ("memory://run/key", "expected memory://<run>/<phase>/<key>"),
        ("memory://run/phase/..", "not a valid name"),
        ("memory://run/phase/%2E%2E", "not a valid name"),
        ("memory://run/phase/a%2Fb", "separator"),
        ("file://host/x", "only local files"),
        ("stream://r/p/k?x=1", "query"),
    ],
)
def test_bad_uris_are_rejected(uri: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse_uri(uri)


def test_ref_is_frozen_and_serialisable() -> None:
    ref = Ref("memory://r/p/k", "k", "json", "memory", 10, None, {"a": 1})
    with pytest.raises(AttributeError):
        ref.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ref.metadata["b"] = 2  # type: ignore[index]
    data = json.loads(json.dumps(ref.to_dict()))
    again = Ref.from_dict(data)
    assert again == ref
    assert dict(again.metadata) == {"a": 1}
    assert again.names == ("r", "p", "k")
    assert again.path is None
    with pytest.raises(InvalidArgument, match="not a ref"):
        Ref.from_dict({"uri": "memory://r/p/k"})


def test_refs_of_another_store_are_refused(tmp_path: Path) -> None:
    a = MemoryStore(run="a")
    b = MemoryStore(run="b")
    ref = a.put("k", 1)
    with pytest.raises(InvalidArgument, match="does not belong"):
        b.get(ref)
    f1 = FileStore(tmp_path / "one")
    f2 = FileStore(tmp_path / "two")
    fref = f1.put("k", {"a": 1})
    with pytest.raises(InvalidArgument, match="only its own files"):
        f2.get(fref)
