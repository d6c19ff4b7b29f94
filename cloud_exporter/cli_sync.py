"""``cloud-exporter sync BASE LOCAL_DIR``: the puller for TF Serving (see docs/serving.md)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from .cli_common import add_command, storage_options
from .cli_format import Progress, wants_progress
from .marker import ExportInfo
from .sync import sync_exports, watch


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``sync`` subcommand to the subparsers ``sub``."""
    p = add_command(
        sub,
        common,
        "sync",
        _cmd_sync,
        help="download committed exports into a local dir that TF Serving polls",
        description="Download every committed export of BASE that LOCAL_DIR lacks, verify it "
        "against its marker and rename it into LOCAL_DIR/<version>: TF Serving never sees a "
        "partial version.",
    )
    p.add_argument("base", help="export base URI (gs://, s3://, file:// or a local path)")
    p.add_argument("local_dir", help="local model base path that TF Serving polls")
    p.add_argument(
        "--keep",
        type=int,
        metavar="N",
        help="fetch only the newest N exports and delete older synced copies once the newer "
        "ones are in place (default: keep everything)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", action="store_true", help="sync once and exit (the default; init containers)"
    )
    mode.add_argument(
        "--watch", action="store_true", help="keep polling until SIGTERM/SIGINT (sidecars)"
    )
    p.add_argument(
        "--interval",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between polls with --watch (jittered by 10%%; default 30)",
    )
    p.add_argument(
        "--max-backoff",
        type=float,
        default=300.0,
        metavar="S",
        help="longest wait after repeated storage failures with --watch (default 300)",
    )


def _cmd_sync(args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = _CycleProgress() if wants_progress(args.json) else None
    options: dict[str, Any] = {
        "keep": args.keep,
        "storage_options": storage_options(args.storage_option),
        "progress": bar.update if bar is not None else None,
    }

    def report(added: list[ExportInfo]) -> None:
        if bar is not None:
            bar.close()  # the result goes on a clean line
        _report(args, added)

    try:
        if args.watch:
            watch(
                args.base,
                args.local_dir,
                interval=args.interval,
                max_backoff=args.max_backoff,
                stop=stop,
                on_synced=report,
                **options,
            )
            return 0
        added = sync_exports(args.base, args.local_dir, stop=stop, **options)
        report(added)
        if stop.is_set():
            print("interrupted", file=sys.stderr)
            return 130
        return 0
    finally:
        if bar is not None:
            bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(args: argparse.Namespace, added: list[ExportInfo]) -> None:
    if args.json:
        print(json.dumps([i.to_dict() for i in added]), flush=True)
    elif added:
        for info in added:
            print(f"synced {info.version} ({len(info.files)} files) from {info.uri}", flush=True)
    elif not args.watch:
        print("up to date", flush=True)


class _CycleProgress:
    """One progress line per sync cycle at a terminal: drawn once a cycle has downloaded for
    half a second, erased before that cycle's report (``--watch`` runs many cycles)."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        with self._lock:
            if self._bar is None:
                self._bar = Progress("sync", None, delay=0.5)
            bar = self._bar
        bar.update(n)

    def close(self) -> None:
        with self._lock:
            bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()
