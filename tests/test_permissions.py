"""Permission denied: a typed error naming the path and the fix, and nothing visible published.

``FaultyFileSystem`` rules raise ``PermissionError`` (what s3fs raises for 403 AccessDenied and
the OS for EACCES) on chosen calls over the real stores; the gcs cases also raise exactly what
gcsfs raises for an HTTP 403 (a plain ``OSError("Forbidden: ...")``, built by gcsfs itself).
Every operation must raise ``PermissionDeniedError`` saying what was denied on which path and
what to grant; no new export may be listed, and no integer directory may hold saved_model.pb
unless it is a committed export (what TF Serving would load). Local disk is not here: its
publishes write with ``os`` calls, and root (as in CI) bypasses file permissions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from invariants import check_state, committed
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter.layout import CLAIM_SUFFIX, MARKER_NAME
from cloud_exporter.testing import FailOn, FaultyFileSystem

FAST = ce.RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.002)
FIX = "grant the training identity object create/get/list/delete on the export prefix"


def access_denied() -> BaseException:
    return PermissionError(13, "Access Denied")


def gcs_forbidden() -> BaseException:
    """The exception gcsfs raises for an HTTP 403, made by gcsfs's own response check."""
    from gcsfs.retry import validate_response

    try:
        validate_response(403, b'{"error": {"message": "caller lacks storage.objects.create"}}', "")
    except OSError as exc:
        return exc
    raise AssertionError("gcsfs did not raise for a 403")


def on(
    methods: tuple[str, ...], suffix: str = "", error: Callable[[], BaseException] = access_denied
) -> list[FailOn]:
    """Deny every call of ``methods`` (on paths ending with ``suffix``)."""
    pred = (lambda _m, path: path.endswith(suffix)) if suffix else None
    return [FailOn(method=m, predicate=pred, error=error, times=None) for m in methods]


@dataclass(frozen=True)
class Case:
    id: str
    rules: Callable[[], list[FailOn]]
    denied: str  # the operation named in the message
    mode: str = "staged"


PUBLISH_CASES = [
    Case("no-create", lambda: on(("pipe_file", "put_file", "cp_file")), "create"),
    Case("claim", lambda: on(("pipe_file",), CLAIM_SUFFIX), "create"),
    # Files up to 8 MiB are uploaded with pipe_file (one read: hashed bytes = sent bytes).
    Case("upload-staged", lambda: on(("put_file", "pipe_file"), "saved_model.pb"), "upload"),
    Case(
        "upload-direct", lambda: on(("put_file", "pipe_file"), "saved_model.pb"), "upload", "direct"
    ),
    Case("copy", lambda: on(("cp_file",)), "copy"),
    Case("marker-staged", lambda: on(("pipe_file",), MARKER_NAME), "create"),
    Case("marker-direct", lambda: on(("pipe_file",), MARKER_NAME), "create", "direct"),
    Case("list", lambda: on(("find", "ls")), "list"),
    Case("read", lambda: on(("cat_file", "cat")), "read"),  # single and batched reads
]
PRUNE_CASES = [
    Case("delete", lambda: on(("rm", "rm_file")), "delete"),
    Case("list", lambda: on(("find", "ls")), "list"),
    Case("read", lambda: on(("cat_file", "cat")), "read"),  # single and batched reads
]
STORES = pytest.mark.parametrize("backend", ["memory", "s3", "gcs"], indirect=True)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=41)


def denied_fs(backend: Any, rules: list[FailOn]) -> FaultyFileSystem:
    return FaultyFileSystem(backend.new_fs(), fail_on=rules)


def check_error(error: BaseException, case: Case, backend: Any) -> None:
    message = str(error)
    assert isinstance(error, ce.PermissionDeniedError), repr(error)
    base_uri = backend.fs.unstrip_protocol(backend.root)  # memory:// gains its root "/"
    assert f"permission denied to {case.denied} {base_uri}" in message, message
    assert FIX in message, message


@STORES
@pytest.mark.parametrize("case", PUBLISH_CASES, ids=[c.id for c in PUBLISH_CASES])
def test_publish_denied(backend, case, source):
    old = ce.publish(source, backend.base, version=1, filesystem=backend.fs)
    before = committed(backend.fs, backend.base)
    fs = denied_fs(backend, case.rules())
    with pytest.raises(ce.PermissionDeniedError) as raised:
        ce.publish(source, backend.base, mode=case.mode, filesystem=fs, retry=FAST)
    check_error(raised.value, case, backend)
    assert sum(c.outcome == "error" and c.injected for c in fs.calls) >= 1
    after = check_state(backend.fs, backend.base, before, trees=[], context=case.id)
    assert sorted(after) == [old.version]  # nothing new is visible, to any reader


@STORES
@pytest.mark.parametrize("case", PRUNE_CASES, ids=[c.id for c in PRUNE_CASES])
def test_prune_denied(backend, case, source):
    for version in (1, 2, 3):
        ce.publish(source, backend.base, version=version, filesystem=backend.fs)
    before = committed(backend.fs, backend.base)
    with pytest.raises(ce.PermissionDeniedError) as raised:
        ce.prune(backend.base, keep=1, filesystem=denied_fs(backend, case.rules()), retry=FAST)
    check_error(raised.value, case, backend)
    after = check_state(backend.fs, backend.base, before, trees=[], context=case.id)
    assert sorted(after) == [1, 2, 3]  # nothing was deleted


@pytest.mark.parametrize("mode", ["staged", "direct"])
def test_gcs_http_403_is_permission_denied(gcs_backend, mode, source):
    """gcsfs reports a 403 as a plain OSError; it must still become PermissionDeniedError."""
    rules = on(("put_file", "pipe_file"), error=gcs_forbidden)
    fs = denied_fs(gcs_backend, rules)
    with pytest.raises(ce.PermissionDeniedError) as raised:
        ce.publish(source, gcs_backend.base, mode=mode, filesystem=fs, retry=FAST)
    check_error(raised.value, Case("gcs-403", lambda: rules, "create"), gcs_backend)
    assert isinstance(raised.value.__cause__, OSError)
    assert "Forbidden" in str(raised.value.__cause__)
    assert committed(gcs_backend.fs, gcs_backend.base) == {}
