"""Shared fixtures: local S3/GCS servers and a ``backend`` fixture run over every store.

Fixtures
--------
s3_endpoint, gcs_endpoint   session: URL of moto / fake-gcs-server, started on first use.
s3_bucket, gcs_bucket       session: name of a bucket created on that server.
backend                     function, parametrized "local", "memory", "s3", "gcs": a `Backend`.
server_backend              function, parametrized "s3", "gcs".
s3_backend, gcs_backend     function: one `Backend` each.

Tests that use a server get the ``servers`` marker (``-m "not servers"`` deselects them). A server
that cannot start fails (never skips) every test that needs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# servers.py lives beside this file; keep it importable as `servers` whatever the package layout.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import fsspec
import pytest
import servers
from servers import Backend

BACKEND_NAMES = ("local", "memory", "s3", "gcs")
SERVER_BACKEND_NAMES = ("s3", "gcs")
SERVER_FIXTURES = frozenset(
    {"s3_endpoint", "gcs_endpoint", "s3_bucket", "gcs_bucket", "s3_backend", "gcs_backend"}
)


# ---------------------------------------------------------------------------------------------
# Servers and buckets (session scope, started on first use)
# ---------------------------------------------------------------------------------------------
def _serve(label: str, start: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    """Enter ``start()``; a server that does not come up fails the tests that need it."""
    server = start()
    try:
        url = server.__enter__()
    except (servers.ServerStartError, OSError) as exc:
        failure = f"{label} could not start: {exc}"
    else:
        try:
            yield url
        finally:
            server.__exit__(None, None, None)
        return
    pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of the moto S3 server, http://127.0.0.1:PORT."""
    yield from _serve("the moto S3 server", servers.moto_server)


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """URL of fake-gcs-server, http://127.0.0.1:PORT."""
    yield from _serve("fake-gcs-server", servers.fake_gcs_server)


def _session_bucket(protocol: str, storage_options: dict[str, Any]) -> str:
    name = f"ce-tests-{uuid.uuid4().hex[:8]}"
    servers.create_bucket(protocol, storage_options, name)
    return name


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: str) -> str:
    return _session_bucket("s3", servers.s3_storage_options(s3_endpoint))


@pytest.fixture(scope="session")
def gcs_bucket(gcs_endpoint: str) -> str:
    return _session_bucket("gcs", servers.gcs_storage_options(gcs_endpoint))


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
def _unique() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _local_backend(tmp_path: Path) -> Backend:
    scratch = tmp_path / "store"
    scratch.mkdir()
    return Backend("local", "file", str(scratch / "exports"), str(scratch))


def _memory_backend() -> Backend:
    scratch = f"memory://{_unique()}"
    return Backend("memory", "memory", f"{scratch}/exports", scratch, cross_process=False)


def _make_backend(request: pytest.FixtureRequest, name: str) -> Backend:
    if name == "local":
        return _local_backend(request.getfixturevalue("tmp_path"))
    if name == "memory":
        return _memory_backend()
    return servers.server_backend_for(request, name)


def _cleanup(backend: Backend) -> None:
    if backend.name == "memory":
        servers.forget_memory_prefix(backend.strip(backend.scratch))
    elif backend.name in SERVER_BACKEND_NAMES:
        # Keeps the in-memory servers small over a long session; failures do not matter here.
        with contextlib.suppress(Exception):
            fs = _cleaner(backend)
            fs.invalidate_cache()
            fs.rm(backend.scratch, recursive=True)


_CLEANERS: dict[str, fsspec.AbstractFileSystem] = {}


def _cleaner(backend: Backend) -> fsspec.AbstractFileSystem:
    """One filesystem per server for teardown (a new s3fs client costs ~0.1 s)."""
    key = repr(sorted(backend.storage_options.items()))
    if key not in _CLEANERS:
        _CLEANERS[key] = backend.new_fs()
    return _CLEANERS[key]


@contextlib.contextmanager
def _backend_for(request: pytest.FixtureRequest, name: str) -> Iterator[Backend]:
    backend = _make_backend(request, name)
    try:
        yield backend
    finally:
        _cleanup(backend)


def _params(names: tuple[str, ...]) -> list[Any]:
    return [
        pytest.param(n, id=n, marks=[pytest.mark.servers] if n in SERVER_BACKEND_NAMES else [])
        for n in names
    ]


@pytest.fixture(params=_params(BACKEND_NAMES))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every store in turn: local, memory, s3 (moto), gcs (fake-gcs-server)."""
    with _backend_for(request, request.param) as value:
        yield value


@pytest.fixture(params=_params(SERVER_BACKEND_NAMES))
def server_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The object stores only: s3 (moto) and gcs (fake-gcs-server)."""
    with _backend_for(request, request.param) as value:
        yield value


@pytest.fixture
def s3_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with _backend_for(request, "s3") as value:
        yield value


@pytest.fixture
def gcs_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with _backend_for(request, "gcs") as value:
        yield value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a server with ``servers``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
