"""Open a ``.n4a`` bundle safely: every check happens before anything is unpickled.

:func:`read_verified_bundle` refuses, in this order:

1. files that are not zips, and members with absolute paths, ``..`` parts,
   backslashes, drive letters, symlinks or duplicate names;
2. bundles larger (uncompressed) than a bound, and any member whose stream
   inflates past the size its zip headers declare (refused as soon as it does,
   never inflated in full), to defuse zip bombs;
3. a missing or malformed ``manifest.json``, or a newer format version;
4. members not listed in the manifest, and listed members that are absent;
5. any member whose SHA-256 differs from the manifest, and any artifact whose
   SHA-256 differs from its id (artifact ids are content hashes);
6. a ``chain.json`` that refers to an artifact the bundle does not carry.

Only then are the bytes handed back; deserialisation is the caller's next step.

Hashes inside a bundle prove integrity, not origin: whoever rewrites a bundle
can rewrite its manifest too. Two checks prove origin:

* ``expected_sha256``: the SHA-256 of the whole ``.n4a`` file, as published by
  whoever exported it (``export_chain`` results can be hashed with ``sha256sum``);
* a signing key (``key=`` or the ``N4A_BUNDLE_KEY`` environment variable): the
  exporter adds ``manifest.sig``, an HMAC-SHA256 of the manifest; with a key
  set, a bundle without a valid signature is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from n4a_store.bundles.layout import (
    ARTIFACT_ID_PATTERN,
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    CHAIN_MEMBER,
    FORMAT_EXTENSIONS,
    MANIFEST_MEMBER,
    artifact_member,
    chain_artifact_ids,
)
from n4a_store.errors import ArtifactIntegrityError, InvalidInputError

MAX_BUNDLE_BYTES = 4 * 1024**3   # total uncompressed size accepted
MAX_MANIFEST_BYTES = 16 * 1024**2
SIGNATURE_MEMBER = "manifest.sig"
KEY_ENV = "N4A_BUNDLE_KEY"


def signing_key(key: str | bytes | None = None) -> bytes | None:
    """The bundle signing key: ``key`` if given, else ``$N4A_BUNDLE_KEY``, else None."""
    if key is None:
        key = os.environ.get(KEY_ENV) or None
    if key is None:
        return None
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def sign_manifest(manifest_bytes: bytes, key: bytes) -> bytes:
    """Hex HMAC-SHA256 of the manifest bytes."""
    return hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest().encode("ascii")


class UnsafeBundleError(InvalidInputError):
    """The bundle is malformed or contains a member that could escape its directory."""


class BundleIntegrityError(ArtifactIntegrityError):
    """A bundle member's SHA-256 does not match the manifest: the bundle was altered."""


@dataclass
class VerifiedBundle:
    """A bundle whose members all passed their hash checks (nothing deserialised yet)."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    chain: dict[str, Any]
    artifacts: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (format, bytes)


def check_member_name(name: str) -> str:
    """Return ``name`` if it is a safe relative zip member name, else raise UnsafeBundleError."""
    if not name or "\\" in name or "\x00" in name:
        raise UnsafeBundleError(f"bundle member {name!r} has an unsafe name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise UnsafeBundleError(f"bundle member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeBundleError(f"bundle member {name!r} contains '..'")
    if path.parts and ":" in path.parts[0]:
        raise UnsafeBundleError(f"bundle member {name!r} names a drive")
    return name


def sha256_hex(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_verified_bundle(path: str | Path, *, max_bytes: int = MAX_BUNDLE_BYTES,
                         expected_sha256: str | None = None,
                         key: str | bytes | None = None) -> VerifiedBundle:
    """Read a bundle and verify every member before returning its bytes.

    Args:
        expected_sha256: If given, the SHA-256 the whole file must have.
        key: Signing key (default ``$N4A_BUNDLE_KEY``); if set, ``manifest.sig`` must be valid.

    Raises:
        FileNotFoundError: the bundle does not exist.
        UnsafeBundleError: bad zip, unsafe member names, unknown members, bad manifest.
        BundleIntegrityError: a member's hash does not match the manifest or its artifact id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle {str(path)!r} does not exist")
    if expected_sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not hmac.compare_digest(digest, expected_sha256.strip().lower()):
            raise BundleIntegrityError(
                f"{path.name} has SHA-256 {digest}, not the expected {expected_sha256}; refused")
    secret = signing_key(key)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise UnsafeBundleError(f"{path.name} is not a valid .n4a bundle (not a zip): {error}") from None
    with archive:
        infos = archive.infolist()
        names: set[str] = set()
        total = 0
        for info in infos:
            check_member_name(info.filename)
            if info.filename in names:
                raise UnsafeBundleError(f"bundle member {info.filename!r} appears twice")
            names.add(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeBundleError(f"bundle member {info.filename!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise UnsafeBundleError(f"bundle member {info.filename!r} is encrypted")
            total += info.file_size
        if total > max_bytes:
            raise UnsafeBundleError(
                f"{path.name} would expand to {total} bytes, more than the allowed {max_bytes}")
        if MANIFEST_MEMBER not in names:
            raise UnsafeBundleError(f"{path.name} has no {MANIFEST_MEMBER}; not an .n4a bundle")

        manifest_bytes = _read(archive, MANIFEST_MEMBER, MAX_MANIFEST_BYTES)
        manifest = _parse_manifest(manifest_bytes, path.name)
        members: dict[str, dict] = manifest["members"]
        if secret is not None:
            if SIGNATURE_MEMBER not in names:
                raise BundleIntegrityError(
                    f"{path.name} is not signed, but a bundle signing key is set; refused")
            signature = _read(archive, SIGNATURE_MEMBER, 1024).strip()
            if not hmac.compare_digest(signature, sign_manifest(manifest_bytes, secret)):
                raise BundleIntegrityError(
                    f"{path.name}: its signature does not match the signing key; the bundle was "
                    f"altered or signed with another key, and is refused")
        unexpected = sorted(names - set(members) - {MANIFEST_MEMBER, SIGNATURE_MEMBER})
        if unexpected:
            raise UnsafeBundleError(f"{path.name} contains members not listed in its manifest: "
                                    f"{unexpected}")
        missing = sorted(set(members) - names)
        if missing:
            raise UnsafeBundleError(f"{path.name} lacks members listed in its manifest: {missing}")

        contents: dict[str, bytes] = {}
        declared = {info.filename: info.file_size for info in infos}
        for name, entry in members.items():
            check_member_name(name)
            # declared sizes can lie: stop inflating a member as soon as it passes its own
            data = _read(archive, name, declared[name])
            digest = sha256_hex(data)
            if digest != entry.get("sha256"):
                raise BundleIntegrityError(
                    f"{path.name}: member {name!r} does not match the SHA-256 recorded in the "
                    f"manifest; the bundle was altered or corrupted and is refused")
            contents[name] = data

    artifacts: dict[str, tuple[str, bytes]] = {}
    for artifact_id, entry in manifest["artifacts"].items():
        fmt = entry.get("format")
        if not ARTIFACT_ID_PATTERN.match(artifact_id) or fmt not in FORMAT_EXTENSIONS:
            raise UnsafeBundleError(f"{path.name}: bad artifact entry {artifact_id!r} in manifest")
        member = artifact_member(artifact_id, fmt)
        if entry.get("member") != member or member not in contents:
            raise UnsafeBundleError(f"{path.name}: artifact {artifact_id!r} has no member {member!r}")
        if sha256_hex(contents[member]) != artifact_id:
            raise BundleIntegrityError(
                f"{path.name}: artifact {artifact_id!r} does not hash to its id; refused")
        artifacts[artifact_id] = (fmt, contents[member])

    try:
        chain = json.loads(contents[CHAIN_MEMBER])
    except (KeyError, ValueError) as error:
        raise UnsafeBundleError(f"{path.name}: missing or malformed {CHAIN_MEMBER}: {error}") from None
    if not isinstance(chain, dict):
        raise UnsafeBundleError(f"{path.name}: {CHAIN_MEMBER} is not a JSON object")
    absent = [aid for aid in chain_artifact_ids(chain) if aid not in artifacts]
    if absent:
        raise UnsafeBundleError(f"{path.name}: chain refers to artifacts not in the bundle: {absent}")
    return VerifiedBundle(path=path, manifest=manifest, manifest_sha256=sha256_hex(manifest_bytes),
                          chain=chain, artifacts=artifacts)


READ_CHUNK = 1 << 20


def _read(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """Read one member in chunks, refusing it as soon as it inflates past ``limit`` bytes.

    Memory and time stay bounded by ``limit`` plus one chunk, whatever the stream holds.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(name) as handle:
            while True:
                chunk = handle.read(min(READ_CHUNK, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise UnsafeBundleError(
                        f"bundle member {name!r} inflates past {limit} bytes (its declared "
                        f"size or the allowed bound); the bundle is refused")
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, zlib.error) as error:
        raise UnsafeBundleError(f"bundle member {name!r} cannot be read: {error}") from None
    return b"".join(chunks)


def _parse_manifest(data: bytes, bundle_name: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as error:
        raise UnsafeBundleError(f"{bundle_name}: {MANIFEST_MEMBER} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise UnsafeBundleError(f"{bundle_name}: {MANIFEST_MEMBER} is not an n4a bundle manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise UnsafeBundleError(f"{bundle_name}: bad format_version {version!r}")
    if version > BUNDLE_FORMAT_VERSION:
        raise UnsafeBundleError(
            f"{bundle_name} uses bundle format version {version}; this n4a reads up to "
            f"{BUNDLE_FORMAT_VERSION}. Upgrade n4a to read it.")
    if not isinstance(manifest.get("members"), dict) or not isinstance(manifest.get("artifacts"), dict):
        raise UnsafeBundleError(f"{bundle_name}: {MANIFEST_MEMBER} lacks 'members' or 'artifacts'")
    for name, entry in manifest["members"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise UnsafeBundleError(f"{bundle_name}: manifest entry for {name!r} has no sha256")
    if CHAIN_MEMBER not in manifest["members"]:
        raise UnsafeBundleError(f"{bundle_name}: manifest does not list {CHAIN_MEMBER}")
    return manifest
