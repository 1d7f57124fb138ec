"""Data keys of encrypted files whose results live on object storage.

A run with ``encryption`` and ``results_dir: s3://...`` seals its files in its local
folder as always; each file is uploaded sealed and, before it, the key file its header
names (its wrapped data key, ``<folder>/.phasekit/keys/<name>.<token>.key``) under the
same relative key: the bucket holds ciphertext and keys wrapped by the master key,
never a plaintext or a master key. Reading an object fetches its key object beside it
(:func:`fetch_key`, for a local copy) or unwraps it directly (:func:`open_object`, for
bytes in memory); deleting an item deletes its key objects (:func:`shred_object_keys`,
crypto-shredding: a copy of the ciphertext a backup may keep cannot be decrypted once no
key object is left; where the bucket keeps versions every version of a key object is
deleted, :meth:`phasekit.objstore.ObjectRoot.delete`); :func:`rewrap_objects` rotates
the master key of every key object under a root without touching the data (and then
deletes the old wrappings a versioned bucket keeps).
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from phasekit import failpoints
from phasekit.crypt.aead import HEADER_BYTES, Header, is_sealed, read_header, unseal
from phasekit.crypt.keyring import (
    RotateReport,
    key_place,
    keys_dir,
    needs_rewrap,
    unwrap,
    wrap,
)
from phasekit.crypt.master import MasterKey
from phasekit.errors import CorruptDataError, KeyUnavailable
from phasekit.names import KEY_SUFFIX, KEYS_DIR, MANIFEST_DIR
from phasekit.objstore import ObjectRoot
from phasekit.paths import open_nofollow

log = logging.getLogger(__name__)

KEYS_FOLDER = f"{MANIFEST_DIR}/{KEYS_DIR}"
"""Where a folder's key objects lie below it (as on disk)."""
_KEY_NAME = re.compile(r"^(?P<stem>.+)\.(?P<token>[0-9a-f]{16})" + re.escape(KEY_SUFFIX) + "$")


def _places(rel: str) -> list[tuple[str, str]]:
    """``(key folder, key name)`` where the data key of object ``rel`` may lie: beside it
    under its own name, or (a file inside a folder item) beside that folder
    (:func:`phasekit.crypt.keyring.nested_name`)."""
    folder, name = posixpath.split(rel)
    own = (posixpath.join(folder, KEYS_FOLDER), name)
    if not folder:
        return [own]
    parent, sub = posixpath.split(folder)
    return [own, (posixpath.join(parent, KEYS_FOLDER), f"{sub}.{name}")]


def key_stems(rel: str) -> list[str]:
    """The key objects of ``rel`` without their ``.<token>.key`` tail (doctor uses them to
    tell a key object whose data object is recorded from a stray one)."""
    return [posixpath.join(folder, name) for folder, name in _places(rel)]


def key_stem(key_rel: str) -> Optional[str]:
    """The stem of a key object's key (None when ``key_rel`` is not one)."""
    folder, name = posixpath.split(key_rel)
    match = _KEY_NAME.match(name)
    if match is None or not (folder == KEYS_FOLDER or folder.endswith("/" + KEYS_FOLDER)):
        return None
    return posixpath.join(folder, match.group("stem"))


def key_owners(stem: str) -> list[str]:
    """The keys of the objects a key object of ``stem`` (:func:`key_stem`) may belong to:
    the file of its name beside the key folder, or a file inside a folder item
    (``<folder>.<file>``, every split of the name)."""
    folder, name = posixpath.split(stem)
    base = folder[: -len(KEYS_FOLDER)].rstrip("/")
    owners = [posixpath.join(base, name)]
    for at, char in enumerate(name):
        if char == "." and 0 < at < len(name) - 1:
            owners.append(posixpath.join(base, name[:at], name[at + 1 :]))
    return owners


def _header_of(path: Path) -> Optional[bytes]:
    fd = open_nofollow(path)
    with open(fd, "rb", closefd=True) as fh:
        head = fh.read(HEADER_BYTES)
    return head if is_sealed(head) else None


def publish_key(root: ObjectRoot, local_root: Path, rel: str) -> Optional[str]:
    """Upload the key file of the local encrypted file ``local_root/rel`` under its own
    relative key (before the file itself is uploaded), and delete the key objects of
    older versions of the file; returns the key object's key (None: not encrypted)."""
    path = local_root / rel
    head = _header_of(path)
    if head is None:
        return None
    header = read_header(head, rel)
    folder, name = key_place(path, header)
    key_file = keys_dir(folder) / f"{name}.{header.token_hex}{KEY_SUFFIX}"
    key_rel = key_file.relative_to(local_root).as_posix()
    root.put_file(key_rel, key_file, None)
    _drop_other_tokens(root, key_rel)
    return key_rel


def _drop_other_tokens(root: ObjectRoot, key_rel: str) -> None:
    stem = key_stem(key_rel)
    if stem is None:
        return
    for other in _key_objects(root, stem):
        if other != key_rel:
            root.delete(other)


def _key_objects(root: ObjectRoot, stem: str) -> list[str]:
    """The key objects of ``stem`` (every token; where the bucket keeps versions, also a
    key left only as old versions)."""
    folder = posixpath.dirname(stem)
    return [k for k in root.versioned_keys(folder + "/") if key_stem(k) == stem]


def _find_key(root: ObjectRoot, rel: str, header: Header) -> Optional[tuple[str, str]]:
    """``(key object key, key name)`` of the data key ``header`` names, if it exists."""
    for folder, name in _places(rel):
        key_rel = posixpath.join(folder, f"{name}.{header.token_hex}{KEY_SUFFIX}")
        if root.exists(key_rel):
            return key_rel, name
    return None


def fetch_key(root: ObjectRoot, rel: str, cache: Path, what: str) -> None:
    """After ``rel`` was downloaded to ``cache/rel``: fetch the key object its header
    names to the same place below ``cache``, so that the local copy decrypts as a file
    of a local run does (nothing to do for a plain object; a missing key object is
    left to the read, which says the key was destroyed)."""
    head = _header_of(cache / rel)
    if head is None:
        return
    found = _find_key(root, rel, read_header(head, what))
    if found is not None:
        root.download(found[0], cache / found[0], None, what)


def open_object(
    root: ObjectRoot, rel: str, data: Any, master: Optional[MasterKey], what: str
) -> Optional[bytearray]:
    """The plaintext of an object's verified bytes ``data`` when they are encrypted (None
    when they are not): its key object is read and unwrapped with ``master``.
    KeyUnavailable naming the key id when ``master`` is None or another key, or when the
    key object is gone (destroyed with the item)."""
    if not is_sealed(data[:HEADER_BYTES]):
        return None
    header = read_header(data, what)
    found = _find_key(root, rel, header)
    if found is None:
        raise KeyUnavailable(
            f"{what}: its data key does not exist (destroyed when the item was deleted); "
            "the data cannot be decrypted"
        )
    key_rel, name = found
    body = _key_body(root.read(key_rel, None, what), what)
    if master is None:
        raise KeyUnavailable(
            f"{what} is encrypted under master key {body.get('key_id')}; no key is "
            "configured (set encryption: {enabled: true, key: env:NAME | file:PATH})"
        )
    key = unwrap(master, body, name, header.token_hex, what)
    return bytearray(unseal(data, name, lambda _h: key, what))


def _key_body(raw: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise CorruptDataError(f"{what}: its key object is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise CorruptDataError(f"{what}: its key object is not a JSON object")
    return body


def shred_object_keys(root: ObjectRoot, rel: str) -> list[str]:
    """Delete every key object of ``rel`` (each token, own or beside its folder); returns
    their URIs."""
    done = []
    for stem in key_stems(rel):
        for key_rel in _key_objects(root, stem):
            root.delete(key_rel)
            done.append(root.uri(key_rel))
    return done


def rewrap_objects(root: ObjectRoot, old: Sequence[MasterKey], new: MasterKey) -> RotateReport:
    """Re-wrap every key object under ``root`` with ``new`` (data objects untouched). A key
    wrapped with none of ``old`` (nor ``new``) is KeyUnavailable naming its key id,
    before anything is changed. Where the bucket keeps versions, the noncurrent versions
    of every key object (the old wrappings) are deleted once all of them are confirmed
    current under ``new`` (read back and unwrapped): a crash before that leaves each key
    object readable with ``new``, and running the rotation again deletes them."""
    by_id = {k.key_id: k for k in old}
    report = RotateReport()
    plan: list[tuple[str, dict[str, Any]]] = []
    current: list[str] = []
    for key_rel in root.list():
        if key_stem(key_rel) is None:
            continue
        uri = root.uri(key_rel)
        body = _key_body(root.read(key_rel, None, uri), f"key object {uri}")
        if needs_rewrap(body, uri, by_id, new, report):
            plan.append((key_rel, body))
        else:
            current.append(key_rel)
    for key_rel, body in plan:
        name, token = _name_token(key_rel)
        master = by_id[str(body["key_id"])]
        uri = root.uri(key_rel)
        data_key = unwrap(master, body, name, token, f"key object {uri}")
        text = json.dumps(wrap(new, data_key, name, token)).encode()
        root.put_stream(key_rel, io.BytesIO(text), None)
        _confirm(root, key_rel, new, data_key)
        report.rewrapped.append(uri)
        report.old_key_ids.add(master.key_id)
        current.append(key_rel)
    if root.keeps_versions:
        failpoints.reach("rotate.before_drop_versions")
        for key_rel in current:
            if _confirm(root, key_rel, new, None):
                report.old_versions_deleted += root.drop_old_versions(key_rel)
    return report


def _name_token(key_rel: str) -> tuple[str, str]:
    match = _KEY_NAME.match(posixpath.basename(key_rel))
    if match is None:  # not reached: key objects are listed only when they match
        raise CorruptDataError(f"{key_rel!r} is not the key of a key object")
    return match.group("stem"), match.group("token")


def _confirm(root: ObjectRoot, key_rel: str, new: MasterKey, data_key: Optional[bytes]) -> bool:
    """Whether the current version of key object ``key_rel`` unwraps with ``new`` (to
    ``data_key`` when given: CorruptDataError if it does not, the upload is not what
    was sent); only then may its old versions go."""
    uri = root.uri(key_rel)
    name, token = _name_token(key_rel)
    try:
        body = _key_body(root.read(key_rel, None, uri), f"key object {uri}")
        found = unwrap(new, body, name, token, f"key object {uri}")
    except (KeyUnavailable, CorruptDataError) as exc:
        if data_key is not None:
            raise
        log.warning("kept the old versions of %s: its current version %s", uri, exc)
        return False
    if data_key is not None and bytes(found) != bytes(data_key):
        raise CorruptDataError(f"key object {uri} reads back another data key than was written")
    return True


__all__ = [
    "KEYS_FOLDER",
    "fetch_key",
    "key_owners",
    "key_stem",
    "key_stems",
    "open_object",
    "publish_key",
    "rewrap_objects",
    "shred_object_keys",
]
