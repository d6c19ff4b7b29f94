"""Text in and out for the CLI: option values, aligned tables, human sizes, a progress line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .errors import InvalidArgumentError
from .marker import ExportInfo
from .retention import PruneReport

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
# retention.py's wording for a version directory without a marker, and what the CLI says instead.


def _number(kind: type, low: float, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value >= low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


POSITIVE = _number(int, 1, "a whole number >= 1")
VERSION = _number(int, 0, "a version number (a whole number >= 0)")
HOURS = _number(float, 1e-9, "a number of hours > 0")
SECONDS = _number(float, 0, "a number of seconds >= 0")


def nested(pairs: list[str], flag: str) -> dict[str, Any]:
    """KEY=VALUE pairs as a dict; dotted keys nest (a.b=1 -> {"a": {"b": 1}})."""
    out: dict[str, Any] = {}
    for key, value in _pairs(pairs, flag):
        target = out
        *parents, leaf = key.split(".")
        if "" in parents or not leaf:
            raise InvalidArgumentError(f"{flag} {key!r}: empty part in a dotted key")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InvalidArgumentError(f"{flag} {key!r}: {part!r} is already set to a value")
        if isinstance(target.get(leaf), dict):
            raise InvalidArgumentError(f"{flag} {key!r}: already holds nested keys")
        target[leaf] = value
    return out


def _pairs(pairs: list[str], flag: str) -> list[tuple[str, Any]]:
    parsed = []
    for item in pairs:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"{flag} {item!r} must look like KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        parsed.append((key, value))
    return parsed


def human_size(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``; exact below 1 KiB."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def publish_result(info: ExportInfo, sessions: Sequence[Any]) -> tuple[dict[str, Any], str]:
    """(the --json document, the human line) of a publish; ``sessions`` are its resume
    sessions (``resume.collect``), which say what an interrupted publish had staged."""
    files = sum(s.reused_files for s in sessions)
    size = sum(s.reused_bytes for s in sessions)
    doc = {**info.to_dict(), "reused_files": files, "reused_bytes": size}
    text = f"published {info.uri} ({len(info.files)} files)"
    if files:
        text += (
            f"; resumed: reused {files} files ({human_size(size)}) staged by an interrupted "
            f"publish, uploaded {len(info.files) - files}"
        )
    return doc, text


def show_metadata(metadata: dict[str, Any]) -> str:
    """Metadata as typed JSON (strings quoted, numbers bare), non-ASCII left readable."""
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def table(rows: Sequence[Sequence[str]], width: int | None = None) -> str:
    """Left-aligned columns two spaces apart; the last column is cut to fit ``width``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        if width is not None and len(line) > width:
            line = line[: max(width - 3, 0)] + "..."
        lines.append(line)
    return "\n".join(lines)


def terminal_width(stream: TextIO = sys.stdout) -> int | None:
    """Columns of the terminal ``stream`` shows on ($COLUMNS wins); None when not one."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if not stream.isatty():
        return None
    return shutil.get_terminal_size().columns


def format_table(exports: Sequence[ExportInfo], width: int | None = None) -> str:
    """One row per export; sizes human, metadata typed."""
    rows = [("VERSION", "CREATED (UTC)", "FILES", "SIZE", "METADATA")]
    for e in exports:
        rows.append(
            (
                str(e.version),
                e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                str(len(e.files)),
                human_size(e.total_size),
                show_metadata(e.metadata),
            )
        )
    text = table(rows, width)
    return text + "\n(no committed exports)" if not exports else text


def format_verify(results: Sequence[dict[str, Any]], width: int | None = None) -> str:
    """One row per verified version: OK with its URI, or FAILED with the problem."""
    rows = [("VERSION", "STATUS", "DETAIL")]
    rows += [
        (str(r["version"]), "OK" if r["ok"] else "FAILED", r.get("uri") or r.get("error", ""))
        for r in results
    ]
    return table(rows, width)


def format_report(report: PruneReport) -> str:
    """A prune report as an aligned table, one row per version or leftover."""
    dry = report.dry_run
    rows: list[tuple[str, str, str]] = [("ACTION", "WHAT", "WHY")]
    rows += [("kept", str(v), ", ".join(why)) for v, why in sorted(report.kept.items())]
    gone = "would delete" if dry else "deleted"
    rows += [(gone, str(v), "no --keep option keeps it") for v in report.deleted]
    rows += [("skipped", str(v), w) for v, w in sorted(report.skipped.items())]
    verb = "would remove" if dry else "removed"
    rows += [(verb, o, "leftover of an interrupted run") for o in report.orphans_removed]
    rows += [
        ("waiting", o, "leftover younger than --grace-seconds") for o in report.orphans_waiting
    ]
    rows += [("REMAINING", p, "run prune again") for p in report.remaining]
    head = f"prune {report.base}{' (dry run)' if dry else ''}"
    return head + "\n" + "\n".join("  " + line for line in table(rows).splitlines())


class Progress:
    """A one-line progress display on a terminal: bytes done of a total, rate, elapsed time.

    ``update(n)`` adds ``n`` bytes (thread-safe). It first draws after ``delay`` seconds, redraws
    a few times a second, and ``close()`` erases the line so the result prints on a clean one.
    """

    def __init__(
        self, label: str, total: int | None, stream: TextIO = sys.stderr, delay: float = 0.0
    ) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done, self._start, self._delay = 0, time.monotonic(), delay
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._drawn = False
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        self._draw()

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
        self._draw()

    def set_total(self, total: int) -> None:
        """The total, once known (until then the line only shows that work goes on)."""
        with self._lock:
            self.total = total
        self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            self._draw()

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = human_size(int(self.done / elapsed)) if elapsed > 0 else "0 B"
        if self.total is None:  # no total: the bytes so far, or that it is alive
            if not self.done:
                return f"{self.label}: working  {elapsed:.1f} s"
            return f"{self.label}: {human_size(self.done)}  {rate}/s  {elapsed:.1f} s"
        pct = min(100, self.done * 100 // self.total) if self.total else 100
        done = f"{pct:3d}% {human_size(self.done)} / {human_size(self.total)}"
        return f"{self.label}: {done}  {rate}/s  {elapsed:.1f} s"

    def _draw(self) -> None:
        if time.monotonic() - self._start < self._delay:
            return
        with self._lock:
            if self._stop.is_set():
                return
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + self._line()[:width] + "\x1b[K")
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        """Stop drawing and erase the line (nothing is left on the result's line)."""
        with self._lock:
            self._stop.set()
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
        self._ticker.join()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wants_progress(as_json: bool) -> bool:
    """A progress display only for a person at a terminal: both streams a TTY, no --json."""
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()
