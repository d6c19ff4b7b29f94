"""Validation of what is about to be published: the SavedModel directory and assets.extra.

Nothing is written anywhere until ``scan_source`` has accepted the whole input.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import google_crc32c

from .errors import InvalidArgumentError, InvalidSourceError
from .layout import ASSETS_EXTRA_DIRNAME, MARKER_NAME, SAVED_MODEL_NAMES, is_saved_model_file

CHUNK = 1 << 20
SPLIT_BYTES = 32 << 20  # a local copy of a file this large runs as parallel ranges (CRC32C only)
RANGES = 4  # at most this many ranges of one file copied at a time
CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class SourceFile:
    """One file to publish: where it goes in the export and where it is read from."""

    relpath: str
    local_path: str
    size: int


def check_relative_path(path: object, what: str) -> str:
    """Accept a clean relative POSIX path (no '..', no absolute or drive path, not empty)."""
    if not isinstance(path, str) or not path or path.strip() != path:
        raise InvalidArgumentError(f"{what} {path!r} must be a non-empty relative path")
    if "\\" in path or _DRIVE.match(path) or path.startswith("/"):
        raise InvalidArgumentError(
            f"{what} {path!r} must be a relative path with '/' separators, not absolute"
        )
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        raise InvalidArgumentError(
            f"{what} {path!r} must not contain '..', '.' or empty components"
        )
    return path


def scan_source(
    source_dir: str | os.PathLike[str], assets_extra: Mapping[str, str] | None = None
) -> list[SourceFile]:
    """List every file to publish, saved_model.pb last; raise before anything is written."""
    root = _check_source_dir(source_dir)
    files = {f.relpath: f for f in _walk(root)}
    if not any(name in files for name in SAVED_MODEL_NAMES):
        raise InvalidSourceError(
            f"{root} has no saved_model.pb or saved_model.pbtxt at its top: pass the directory "
            "that tf.saved_model.save / model.export wrote"
        )
    for name in SAVED_MODEL_NAMES:
        if name in files and files[name].size == 0:
            raise InvalidSourceError(
                f"{files[name].local_path} is empty (0 bytes), so {root} is not a SavedModel that "
                "TF Serving or tf.saved_model.load can read: export the model again"
            )
    for extra in _assets_extra(assets_extra):
        if extra.relpath in files:
            raise InvalidArgumentError(
                f"assets_extra destination {extra.relpath!r} already exists in {root}; "
                "choose another destination"
            )
        files[extra.relpath] = extra
    return sorted(files.values(), key=lambda f: (is_saved_model_file(f.relpath), f.relpath))


def _check_source_dir(source_dir: object) -> str:
    if not isinstance(source_dir, (str, os.PathLike)) or not os.fspath(source_dir):
        raise InvalidSourceError(f"source_dir must be a directory path, got {source_dir!r}")
    path = os.fspath(source_dir)
    if not os.path.exists(path):
        raise InvalidSourceError(f"source directory {path} does not exist")
    if not os.path.isdir(path):
        raise InvalidSourceError(
            f"{path} is a file, not a directory: pass the SavedModel directory that contains "
            "saved_model.pb"
        )
    return os.path.realpath(path)


def _walk(root: str) -> list[SourceFile]:
    found: list[SourceFile] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real_dir = os.path.realpath(dirpath)
        _check_inside(root, dirpath, real_dir)
        if real_dir in seen_dirs:  # a symlink loop inside the source
            dirnames[:] = []
            continue
        seen_dirs.add(real_dir)
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in filenames:
            local = os.path.join(dirpath, name)
            # Only a link needs resolving: any other name is real_dir/name (one lstat, not a
            # realpath walk per file).
            info = os.lstat(local)
            real = os.path.join(real_dir, name)
            if stat.S_ISLNK(info.st_mode):
                real = os.path.realpath(local)
                _check_inside(root, local, real)
                info = os.stat(real)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidSourceError(f"{local} is not a regular file (a socket, fifo or link)")
            relpath = name if rel_dir == "." else f"{rel_dir}/{name}"
            if relpath == MARKER_NAME:
                raise InvalidSourceError(
                    f"{local} uses the reserved name {MARKER_NAME}; remove it from the source"
                )
            found.append(SourceFile(relpath, local, info.st_size))
    return found


def _check_inside(root: str, shown: str, real: str) -> None:
    if real != root and not real.startswith(root + os.sep):
        raise InvalidSourceError(
            f"{shown} is a symlink that points outside the source directory ({real}); "
            "copy the target into the SavedModel or remove the link"
        )


def _assets_extra(assets_extra: Mapping[str, str] | None) -> list[SourceFile]:
    if assets_extra is None:
        return []
    if not isinstance(assets_extra, Mapping):
        raise InvalidArgumentError(
            "assets_extra must be a mapping {destination under assets.extra/: source file path}"
        )
    extras = []
    for dest, src in assets_extra.items():
        dest = check_relative_path(dest, "assets_extra destination")
        if not isinstance(src, (str, os.PathLike)) or not os.path.isfile(src):
            kind = "a directory" if isinstance(src, str) and os.path.isdir(src) else "missing"
            raise InvalidArgumentError(
                f"assets_extra source {src!r} for {dest!r} is {kind}: it must be an existing "
                "regular file"
            )
        src = os.fspath(src)
        extras.append(SourceFile(f"{ASSETS_EXTRA_DIRNAME}/{dest}", src, os.path.getsize(src)))
    return extras


class Digests:
    """CRC32C (always) and optionally SHA-256 of a byte stream, updated chunk by chunk."""

    def __init__(self, sha256: bool = False, crc: int = 0) -> None:
        self._crc = crc
        self._sha = hashlib.sha256() if sha256 else None

    def update(self, chunk: bytes) -> None:
        self._crc = google_crc32c.extend(self._crc, chunk)
        if self._sha is not None:
            self._sha.update(chunk)

    @property
    def crc32c(self) -> str:
        return f"{self._crc:08x}"

    @property
    def sha256(self) -> str | None:
        return None if self._sha is None else self._sha.hexdigest()

    def matches(self, record: Any) -> bool:
        """True if every checksum ``record`` carries equals this stream's."""
        if record.crc32c is not None and record.crc32c != self.crc32c:
            return False
        return record.sha256 is None or self._sha is None or record.sha256 == self.sha256


def crc32c_b64(hex_crc: str) -> str:
    """The base64 form GCS and S3 use for a CRC32C given as 8 hex digits."""
    return base64.b64encode(bytes.fromhex(hex_crc)).decode()


def crc32c_hex(b64: str) -> str | None:
    """8 hex digits from the stores' base64 CRC32C; None if it is not a 4-byte value."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, TypeError):
        return None
    return raw.hex() if len(raw) == 4 else None


def digest_stream(f: BinaryIO, sha256: bool, sink: Iterable[Any] = ()) -> tuple[Digests, int]:
    """Read ``f`` to its end once, hashing each chunk and handing it to every sink's write()."""
    digests, total = Digests(sha256), 0
    sinks = list(sink)
    while chunk := f.read(CHUNK):
        digests.update(chunk)
        for out in sinks:
            out.write(chunk)
        total += len(chunk)
    return digests, total


def read_hashed(path: str, sha256: bool) -> tuple[bytes, Digests]:
    """A small file's bytes and checksums from one read (the upload sends these same bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    digests = Digests(sha256)
    digests.update(data)
    return data, digests


def hash_file(path: str, sha256: bool) -> Digests:
    """Checksums of a local file, read in one streaming pass."""
    with open(path, "rb") as f:
        return digest_stream(f, sha256)[0]


def copy_file(f: SourceFile, dst: str, sha256: bool = False) -> Digests:
    """Copy a source file to a local path, hashing the bytes as they pass: each byte read once,
    and the checksums cover exactly the bytes written. Files of SPLIT_BYTES and more (CRC32C
    only: SHA-256 cannot be combined) are copied as up to RANGES ranges on parallel threads,
    each range's CRC32C combined into the file's."""
    if sha256 or f.size < SPLIT_BYTES:
        with open(f.local_path, "rb") as src, open(dst, "wb") as out:
            digests, copied = digest_stream(src, sha256, [out])
        check_unchanged(f, copied)
        return digests
    step = -(-f.size // RANGES)
    starts = list(range(0, f.size, step))
    ends: list[int | None] = [*starts[1:], None]  # the last range reads on to the end of file
    src_fd = os.open(f.local_path, os.O_RDONLY)
    try:
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            with ThreadPoolExecutor(len(starts)) as pool:
                done = list(pool.map(_copy_range, [(src_fd, dst_fd)] * len(starts), starts, ends))
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    crc, copied = 0, 0
    for start, (range_crc, length) in zip(starts, done, strict=True):
        if start != copied:  # an earlier range came up short: the file shrank
            check_unchanged(f, copied)
        crc, copied = crc32c_combine(crc, range_crc, length), copied + length
    check_unchanged(f, copied)  # grew (the last range read on) or shrank at its end
    return Digests(crc=crc)


def _copy_range(fds: tuple[int, int], start: int, end: int | None) -> tuple[int, int]:
    """Copy bytes [start, end) (to the end of the file if ``end`` is None) from fds[0] to
    fds[1] at the same offsets; return the CRC32C of the bytes written and their count."""
    (src_fd, dst_fd), crc, pos = fds, 0, start
    while end is None or pos < end:
        chunk = os.pread(src_fd, CHUNK if end is None else min(CHUNK, end - pos), pos)
        if not chunk:
            break
        crc = google_crc32c.extend(crc, chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.pwrite(dst_fd, view, pos + len(chunk) - len(view)) :]
        pos += len(chunk)
    return crc, pos - start


def _gf2_times(matrix: list[int], vector: int) -> int:
    out, row = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[row]
        vector >>= 1
        row += 1
    return out


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of A + B from crc1 = CRC32C(A), crc2 = CRC32C(B) and len2 = len(B): crc1 is
    advanced over len2 zero bytes by repeated squaring of the one-zero-bit operator."""
    if len2 <= 0:
        return crc1
    odd = [CRC32C_POLY] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = [_gf2_times(odd, odd[n]) for n in range(32)]  # two zero bits
    odd = [_gf2_times(even, even[n]) for n in range(32)]  # four zero bits
    while True:  # apply len2 zero bytes: bit by bit of len2, squaring the operator each time
        even = [_gf2_times(odd, odd[n]) for n in range(32)]
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = [_gf2_times(even, even[n]) for n in range(32)]
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def check_unchanged(f: SourceFile, seen: int) -> None:
    if seen != f.size:
        raise InvalidSourceError(
            f"{f.local_path} changed while it was being published ({f.size} bytes when checked, "
            f"{seen} when copied); publish a directory that nothing writes to any more"
        )
