"""Credentials never leak: not in logs, exception messages, stored objects or CLI output.

A recognizable fake access key and secret go to the moto S3 server (which accepts any) through
``storage_options``, the CLI's ``-o`` flags and the ``AWS_*`` environment. Every operation runs,
including failures (a version conflict, retries exhausted, permission denied), with every
logger at DEBUG; then logs, exception strings/reprs/tracebacks, CLI stdout/stderr and every
object under the test's prefix are scanned.

Known and out of our control: botocore's DEBUG log of each HTTP request prints the request
headers, whose ``Authorization`` value names the access key ID (never the secret). The test
pins that down exactly: the key ID may appear only in DEBUG records of ``botocore`` loggers;
the secret appears nowhere, and nothing at INFO or above (nor any ``cloud_exporter`` record)
names either. See docs/guarantees.md.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

import fsspec
import pytest
from savedmodels import fake_saved_model
from test_cli import cli

import cloud_exporter as ce
from cloud_exporter.testing import FailOn, FaultyFileSystem

KEY = "AKIAFAKECE7LEAKTEST0"
SECRET = "fake-secret-ce7-0123456789abcdefLEAK"
FAST = ce.RetryPolicy(max_attempts=2, initial_wait=0.001, max_wait=0.002)


def leaked(text: str | bytes) -> list[str]:
    """Which of the two credentials ``text`` contains."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return [name for name, value in (("key", KEY), ("secret", SECRET)) if value in text]


def exception_text(exc: BaseException) -> str:
    """The traceback (with chained causes), str and repr of ``exc`` and of every cause."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.fixture
def options(s3_backend) -> dict[str, Any]:
    return {**s3_backend.storage_options, "key": KEY, "secret": SECRET}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=31)


def run_api(base: str, options: dict[str, Any], source: Path) -> tuple[list[str], list[Any]]:
    """Every public operation; returns (texts they produced, errors they raised)."""
    info = ce.publish(source, base, metadata={"step": 1}, storage_options=options)
    ce.publish(source, base, storage_options=options)
    texts = [repr(info), json.dumps(info.to_dict())]
    texts += [repr(e) for e in ce.list_exports(base, storage_options=options)]
    texts.append(repr(ce.latest_export(base, storage_options=options)))
    texts.append(repr(ce.verify_export(base, info.version, deep=True, storage_options=options)))
    texts.append(json.dumps(ce.prune(base, keep=1, storage_options=options).to_dict()))
    errors = [
        raised(
            ce.VersionConflictError,
            lambda: ce.publish(source, base, version=info.version + 1, storage_options=options),
        ),
        raised(
            ce.TransientStorageError,
            lambda: ce.publish(
                source, base, filesystem=faulty(options, transient_rate=1.0), retry=FAST
            ),
        ),
        raised(
            ce.PermissionDeniedError,
            lambda: ce.prune(
                base, keep=1, filesystem=faulty(options, fail_on=[denied()]), retry=FAST
            ),
        ),
        raised(ce.ExportNotFoundError, lambda: ce.verify_export(base, 1, storage_options=options)),
    ]
    return texts, errors


def faulty(options: dict[str, Any], **faults: Any) -> FaultyFileSystem:
    return FaultyFileSystem(fsspec.filesystem("s3", skip_instance_cache=True, **options), **faults)


def denied() -> FailOn:
    return FailOn(method="find", error=PermissionError(13, "Access Denied"), times=None)


def raised(kind: type[BaseException], call: Any) -> BaseException:
    with pytest.raises(kind) as info:
        call()
    return info.value


def test_library_never_leaks_credentials(s3_backend, options, source, caplog):
    caplog.set_level(logging.DEBUG)  # the root logger: every library and dependency at DEBUG
    texts, errors = run_api(s3_backend.base, options, source)
    assert len(errors) == 4
    for text in texts:
        assert not leaked(text), text
    for error in errors:
        assert not leaked(exception_text(error)), exception_text(error)
    check_log_records(caplog.records)
    check_stored_objects(s3_backend)


def check_log_records(records: list[logging.LogRecord]) -> None:
    assert any(r.name.startswith("cloud_exporter") for r in records)  # the capture works...
    assert any(r.name.startswith("botocore") and r.levelno == logging.DEBUG for r in records)
    for record in records:
        text = record.getMessage() + (
            "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        )
        found = leaked(text)
        botocore_debug = record.name.startswith("botocore") and record.levelno == logging.DEBUG
        allowed = ["key"] if botocore_debug else []  # Authorization header: see module doc
        assert set(found) <= set(allowed), f"{record.name} {record.levelname}: {text[:500]}"


def check_stored_objects(backend: Any) -> None:
    fs = backend.new_fs()
    objects = fs.find(backend.strip(backend.scratch))
    assert any(p.endswith("_cloud_exporter_commit.json") for p in objects)
    for path in objects:
        assert not leaked(fs.cat_file(path)), path


# ---------------------------------------------------------------------------------------------
# The CLI, as a real process, credentials by flag and by environment
# ---------------------------------------------------------------------------------------------
def endpoint_flags(backend: Any) -> list[str]:
    client = backend.storage_options["client_kwargs"]
    return [f"-oclient_kwargs.{k}={v}" for k, v in client.items()]


CREDENTIAL_FLAGS = [f"-okey={KEY}", f"-osecret={SECRET}"]
CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
READ_COMMANDS = (["list", "--json"], ["latest"], ["verify", "--deep"], ["prune", "--keep", "1"])


@pytest.mark.parametrize("via", ["flags", "environment"])
def test_cli_never_leaks_credentials(s3_backend, source, via):
    flags = endpoint_flags(s3_backend) + (CREDENTIAL_FLAGS if via == "flags" else [])
    env = CREDENTIAL_ENV if via == "environment" else {}
    base = s3_backend.base
    runs = [cli("publish", str(source), base, "--version", "7", "--verbose", *flags, env=env)]
    runs += [cli(*command, base, "--verbose", *flags, env=env) for command in READ_COMMANDS]
    conflict = cli("publish", str(source), base, "--version", "7", "--verbose", *flags, env=env)
    assert [r.returncode for r in runs] == [0, 0, 0, 0, 0], [r.stderr for r in runs]
    assert conflict.returncode == 5 and "Traceback" in conflict.stderr  # --verbose: logged
    for run in [*runs, conflict]:
        assert not leaked(run.stdout + run.stderr), run.args
    check_stored_objects(s3_backend)
