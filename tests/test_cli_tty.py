"""The CLI at a terminal: the progress display in a real pseudo-terminal, and complete help."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from savedmodels import fake_saved_model

from cloud_exporter import cli
from cloud_exporter.cli_format import Progress, human_size

CLEAR = "\r\x1b[K"


def run_in_pty(*args: str, columns: int = 100, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdin/stdout/stderr on a pseudo-terminal; return (code, all output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_exporter", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


def screen_lines(output: str) -> list[str]:
    """What a terminal shows on each line: the text after the last carriage return."""
    lines = output.replace("\r\n", "\n").split("\n")
    return [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in lines]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=3, shard_bytes=300_000)


def total_bytes(source: Path) -> int:
    return sum(p.stat().st_size for p in source.rglob("*") if p.is_file())


def test_publish_shows_progress_then_a_clean_result_line(tmp_path, source):
    base = tmp_path / "exports"
    code, out = run_in_pty("publish", str(source), str(base))
    assert code == 0, out
    assert "upload:" in out and "100%" in out, out
    assert human_size(total_bytes(source)) in out  # the total is the source's bytes
    published = [line for line in screen_lines(out) if "published" in line]
    assert len(published) == 1 and published[0].startswith("published file://"), out
    before = out[: out.index("published")]
    assert before.endswith(CLEAR)  # the bar was erased before the result was written


def test_verify_deep_shows_progress_and_json_shows_none(tmp_path, source):
    base = tmp_path / "exports"
    assert run_in_pty("publish", str(source), str(base))[0] == 0
    code, out = run_in_pty("verify", str(base), "--deep")
    assert code == 0 and "verify:" in out and "100%" in out, out
    assert out[: out.index("VERSION")].endswith(CLEAR)
    code, out = run_in_pty("verify", str(base), "--deep", "--json")
    assert code == 0 and "verify:" not in out and "\x1b" not in out, out
    code, out = run_in_pty("prune", str(base), "--keep", "1")
    assert code == 0 and "prune:" not in out, out  # quick prunes show no display


def test_no_progress_when_not_a_terminal(tmp_path, source):
    done = subprocess.run(
        [sys.executable, "-m", "cloud_exporter", "publish", str(source), str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "\x1b" not in done.stdout
    assert done.stdout.startswith("published ")


def test_list_fits_the_terminal_width(tmp_path, source):
    base = tmp_path / "exports"
    long_value = "x" * 300
    assert run_in_pty("publish", str(source), str(base), "--metadata", f"note={long_value}")[0] == 0
    code, out = run_in_pty("list", str(base), columns=70)
    assert code == 0
    rows = [line for line in screen_lines(out) if line.strip()]
    assert rows[0].startswith("VERSION") and len(rows) == 2
    assert all(len(line) <= 70 for line in rows), rows
    assert rows[1].endswith("...")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: p for a in actions for name, p in a.choices.items()}


# Deliberately hidden: publish's old spelling of --export-version, kept so scripts still run.
HIDDEN = {("publish", "--version")}


def test_every_command_argument_and_option_has_help():
    parser = cli._parser()
    commands = subparsers(parser)
    assert {"publish", "list", "latest", "verify", "prune", "demo"} <= set(commands)
    top_help = parser.format_help()
    listed = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}
    for name, sub in commands.items():
        if name in listed:
            assert listed[name] and name in top_help, f"{name} has no line in --help"
        else:  # an alias: listed with its command, as "prune (gc)"
            assert f"({name})" in top_help
        for action in sub._actions:
            flag = action.option_strings[-1] if action.option_strings else action.dest
            if (name, flag) in HIDDEN:
                assert action.help == argparse.SUPPRESS
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {flag}: no help"
    for action in parser._actions:
        assert action.help, f"top-level {action.option_strings}: no help"


def test_global_options_work_before_or_after_the_command(tmp_path, source):
    base = str(tmp_path / "exports")
    for argv in (
        ["--json", "-v", "publish", str(source), base],
        ["publish", str(source), base, "--json", "-v"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cloud_exporter", *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.lstrip().startswith("{")
        assert "INFO cloud_exporter" in done.stderr  # --verbose took effect
    args = cli._parser().parse_args(["-o", "a.b=1", "list", base, "-o", "c=2"])
    cli._merge_globals(args)
    assert cli.storage_options(args.storage_option) == {"a": {"b": 1}, "c": 2}


def test_a_delayed_display_appears_only_for_long_work_and_is_erased():
    import io

    quick = io.StringIO()
    with Progress("prune", None, stream=quick, delay=0.5):
        pass
    assert quick.getvalue() == ""  # done before the delay: nothing drawn, nothing to erase
    slow = io.StringIO()
    with Progress("prune", None, stream=slow, delay=0.2):
        time.sleep(0.7)
    assert "prune: working" in slow.getvalue()
    assert slow.getvalue().endswith(CLEAR)


def test_publish_with_a_display_walks_the_source_once(tmp_path, source, monkeypatch, capsys):
    """The bar's total comes from publish's own scan (on_total), not from a second walk."""
    from cloud_exporter import cli_common, publishing

    walks = []
    real_scan = publishing.scan_source
    monkeypatch.setattr(publishing, "scan_source", lambda *a: walks.append(a) or real_scan(*a))
    monkeypatch.setattr(cli_common, "wants_progress", lambda as_json: True)
    totals = []
    real_set_total = Progress.set_total
    monkeypatch.setattr(
        Progress, "set_total", lambda bar, n: totals.append(n) or real_set_total(bar, n)
    )
    retry_log = logging.getLogger("cloud_exporter.retry")
    level = retry_log.level
    assert cli.main(["publish", str(source), str(tmp_path / "exports")]) == 0
    assert retry_log.level == level  # quiet retries for the run only: the process keeps its own
    assert len(walks) == 1
    assert totals == [total_bytes(source)]
    assert "published" in capsys.readouterr().out


def test_sync_shows_byte_progress_then_clean_result_lines(tmp_path, source):
    """No extra needed: the same display as the other commands, one per sync cycle."""
    base = tmp_path / "exports"
    assert run_in_pty("publish", str(source), str(base))[0] == 0
    hook = tmp_path / "hook"
    hook.mkdir()
    # Each downloaded file reports, then waits 0.3 s: the cycle outlasts the 0.5 s delay.
    (hook / "sitecustomize.py").write_text(
        "import time\n"
        "import cloud_exporter.sync as s\n"
        "_real = s.download_files\n"
        "def _slow(storage, base, info, stage, progress, stop):\n"
        "    def slow(n):\n"
        "        progress(n)\n"
        "        time.sleep(0.3)\n"
        "    return _real(storage, base, info, stage, progress and slow, stop)\n"
        "s.download_files = _slow\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
        code, out = run_in_pty("sync", str(base), str(tmp_path / "served"))
        assert code == 0, out
        drawn = re.findall(r"sync: ([\d.]+ [KMG]?i?B)  [\d.]+ [KMG]?i?B/s  [\d.]+ s", out)
        assert drawn, out  # the library's own display (no tqdm, no extra to install)
        synced = [line for line in screen_lines(out) if line.startswith("synced ")]
        assert len(synced) == 1, out
        assert out[: out.index("synced ")].endswith(CLEAR)  # erased before the result line
        assert run_in_pty("publish", str(source), str(base))[0] == 0
        code, out = run_in_pty("sync", str(base), str(tmp_path / "served"), "--json")
        assert code == 0 and "sync:" not in out and "\x1b" not in out, out
        assert json.loads(out.strip().splitlines()[-1])[0]["version"] > 0
