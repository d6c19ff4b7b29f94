"""The cloud-exporter CLI: output, JSON, exit codes, one-line errors; run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter.layout import MARKER_NAME


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_exporter", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def options(backend) -> list[str]:
    """-o flags that reach the backend's server (dotted keys nest)."""
    flags = []
    for key, value in backend.storage_options.items():
        if isinstance(value, dict):
            flags += [f"-o{key}.{k}={v}" for k, v in value.items()]
        else:
            flags.append(f"-o{key}={value}")
    return flags


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=11)


# memory:// lives inside one process; the CLI runs in its own.
@pytest.mark.parametrize("backend", ["local", "s3", "gcs"], indirect=True)
def test_publish_list_latest_verify_prune(backend, source, tmp_path):
    (tmp_path / "vocab.txt").write_text("a b c")
    opts = options(backend)
    published = []
    for step in (1, 2, 3):
        out = cli(
            "publish",
            str(source),
            backend.base,
            "--json",
            *opts,
            "--assets-extra",
            f"vocab.txt={tmp_path / 'vocab.txt'}",
            "--metadata",
            f"global_step={step}",
            "--metadata",
            "tag=nightly",
        )
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["metadata"] == {"global_step": step, "tag": "nightly"}
        published.append(doc["version"])

    listed = cli("list", backend.base, *opts)
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == [
        "VERSION",
        "CREATED",
        "(UTC)",
        "FILES",
        "SIZE",
        "METADATA",
    ]
    assert [int(line.split()[0]) for line in listed.stdout.splitlines()[1:]] == published

    latest = cli("latest", backend.base, "--json", *opts)
    assert json.loads(latest.stdout)["version"] == published[-1]

    verify = cli("verify", backend.base, "--deep", *opts)
    assert verify.returncode == 0
    assert verify.stdout.count(" OK ") == 3

    dry = cli("prune", backend.base, "--keep", "1", "--dry-run", "--json", *opts)
    assert json.loads(dry.stdout)["deleted"] == published[:2]
    assert len(ce.list_exports(backend.base, filesystem=backend.new_fs())) == 3
    gc = cli("gc", backend.base, "--keep", "1", *opts)
    assert gc.returncode == 0
    rows = [line.split() for line in gc.stdout.splitlines()]
    assert ["deleted", str(published[0]), "no", "--keep", "option", "keeps", "it"] in rows
    assert ["kept", str(published[2]), "newest", "1"] in rows
    assert [
        e.version for e in ce.list_exports(backend.base, filesystem=backend.new_fs())
    ] == published[2:]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["publish", "{tmp}/missing", "{base}"], 2, "does not exist"),
        (["publish", "{src}", "{base}", "--assets-extra", "../x={src}/saved_model.pb"], 2, "'..'"),
        (["publish", "{src}", "nosuch://b/x"], 2, "not a known storage scheme"),
        (["verify", "{base}", "99"], 3, "no committed export"),
        (["latest", "{base}"], 3, "no committed export"),
        (["prune", "{base}", "--keep", "0"], 2, "argument --keep: must be a whole number >= 1"),
        (["publish", "{src}", "{base}", "--metadata", "novalue"], 2, "KEY=VALUE"),
    ],
)
def test_errors_are_one_line_with_documented_exit_codes(args, code, message, tmp_path, source):
    base = str(tmp_path / "exports")
    argv = [a.format(tmp=tmp_path, base=base, src=source) for a in args]
    out = cli(*argv)
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") or lines[0].startswith("no committed export")
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_conflict_exit_code_and_verbose_traceback(tmp_path, source):
    base = str(tmp_path / "exports")
    assert cli("publish", str(source), base, "--version", "5").returncode == 0
    again = cli("publish", str(source), base, "--version", "5")
    assert again.returncode == 5 and "Traceback" not in again.stderr
    verbose = cli("publish", str(source), base, "--version", "5", "--verbose")
    assert verbose.returncode == 5 and "Traceback" in verbose.stderr


def test_corrupt_export_fails_verify_with_code_4(tmp_path, source):
    base = tmp_path / "exports"
    info = ce.publish(source, str(base))
    (base / str(info.version) / "variables" / "variables.index").write_bytes(b"changed!!")
    out = cli("verify", str(base))
    assert out.returncode == 4
    assert "FAILED" in out.stdout and "variables/variables.index" in out.stdout


def test_bad_storage_option_and_unreachable_endpoint_are_one_line(s3_backend, source):
    opts = options(s3_backend)
    bogus = cli("list", s3_backend.base, *opts, "-o", "bogus_option=1")
    assert bogus.returncode == 2, bogus.stderr
    assert bogus.stderr.strip().splitlines() == [bogus.stderr.strip()]
    assert bogus.stderr.startswith("error: -o bogus_option: ")
    dead = [
        "-okey=testing",
        "-osecret=testing",
        "-oclient_kwargs.endpoint_url=http://127.0.0.1:1",
        "-oconfig_kwargs.retries.max_attempts=1",  # botocore's own retries: not under test
    ]
    quiet = cli("list", "s3://nowhere/models", *dead)
    assert quiet.returncode == 6
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    assert "RetryPolicy" not in quiet.stderr and "-o client_kwargs.endpoint_url" in quiet.stderr
    loud = cli("list", "s3://nowhere/models", *dead, "--verbose")
    assert "WARNING cloud_exporter.retry" in loud.stderr


def test_dotted_metadata_nests_typed_and_keep_best_finds_it(tmp_path, source):
    base = str(tmp_path / "exports")
    versions = []
    for loss in (0.5, 0.1, 0.3):
        out = cli(
            "publish",
            str(source),
            base,
            "--json",
            "--metadata",
            f"metrics.loss={loss}",
            "--metadata",
            "metrics.tag=ünï",
        )
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["metadata"] == {"metrics": {"loss": loss, "tag": "ünï"}}
        versions.append(doc["version"])
    listed = cli("list", base)
    assert '"metrics": {"loss": 0.5, "tag": "ünï"}' in listed.stdout  # typed, not escaped
    assert "KiB" in listed.stdout  # human sizes in text ...
    sizes = {e["total_size"] for e in json.loads(cli("list", base, "--json").stdout)}
    assert sizes == {ce.list_exports(base)[0].total_size}  # ... exact bytes in --json
    pruned = cli("prune", base, "--keep", "1", "--keep-best", "metrics.loss:min:1", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["deleted"] == [versions[0]]
    clash = cli("publish", str(source), base, "--metadata", "a=1", "--metadata", "a.b=2")
    assert clash.returncode == 2 and "already set" in clash.stderr


def test_verify_reports_each_failure_once(tmp_path, source):
    base = tmp_path / "exports"
    good, bad = ce.publish(source, str(base)), ce.publish(source, str(base))
    (base / str(bad.version) / "variables" / "variables.index").write_bytes(b"changed!!")
    text = cli("verify", str(base))
    assert text.returncode == 4
    assert (text.stdout + text.stderr).count("variables/variables.index") == 1
    assert text.stderr.strip() == f"error: 1 of 2 exports failed ({bad.version})"
    rows = text.stdout.splitlines()
    assert rows[0].split() == ["VERSION", "STATUS", "DETAIL"]
    starts = {row.index(status) for row, status in zip(rows[1:], ("OK", "FAILED"), strict=True)}
    assert len(starts) == 1  # the columns line up
    as_json = cli("verify", str(base), "--json")
    assert as_json.returncode == 4 and as_json.stdout.count("variables.index") == 1
    assert [r["ok"] for r in json.loads(as_json.stdout)] == [True, False]
    assert str(good.version) in rows[1]


def test_latest_on_empty_base_and_unmarked_version_wording(tmp_path, source):
    base = tmp_path / "exports"
    empty = cli("latest", str(base), "--json")
    assert empty.returncode == 3
    assert empty.stderr.startswith("error: no committed export")
    assert json.loads(empty.stdout)["error"]["exit_code"] == 3
    info = ce.publish(source, str(base))
    (base / str(info.version) / MARKER_NAME).unlink()
    out = cli("prune", str(base), "--keep", "1")
    assert out.returncode == 0, out.stderr
    assert "not written by cloud_exporter" not in out.stdout
    assert "its marker was deleted" in out.stdout
