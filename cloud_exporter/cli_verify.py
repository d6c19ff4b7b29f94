"""The ``cloud-exporter verify`` command: check one or every export is intact."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_common import add_base, add_command, emit, progress, storage_options
from .cli_format import VERSION, format_verify, terminal_width
from .errors import CorruptExportError, ExportNotFoundError
from .exports import list_exports, verify_export
from .marker import ExportInfo


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``verify`` subcommand to the CLI's subparsers."""
    p = add_command(sub, common, "verify", _run, help="check one or every export is intact")
    add_base(p)
    p.add_argument("version", nargs="?", type=VERSION, help="version to check (default: all)")
    p.add_argument("--deep", action="store_true", help="also compare checksums (CRC32C)")
    p.add_argument(
        "--download", action="store_true", help="with --deep: re-read every file's bytes"
    )


def _run(args: argparse.Namespace) -> int:
    options = storage_options(args.storage_option)

    def check(version: int) -> ExportInfo:
        return verify_export(
            args.base, version, deep=args.deep, download=args.download, storage_options=options
        )

    if args.version is not None:  # one version: its result, or its one-line error
        with progress(args, "verify", None, delay=0 if args.deep else 1.0):
            info = check(args.version)
        emit(args, {"version": info.version, "ok": True, "uri": info.uri}, f"OK {info.uri}")
        return 0
    exports = list_exports(args.base, storage_options=options)
    if not exports:
        raise ExportNotFoundError(f"no committed export under {args.base}")
    results, codes = [], []
    total = sum(e.total_size for e in exports) if args.deep else None
    with progress(args, "verify", total, delay=0 if args.deep else 1.0) as bar:
        for e in exports:
            try:
                info = check(e.version)
                results.append({"version": e.version, "ok": True, "uri": info.uri})
            except (CorruptExportError, ExportNotFoundError) as exc:
                codes.append(4 if isinstance(exc, CorruptExportError) else 3)
                results.append({"version": e.version, "ok": False, "error": str(exc)})
            if bar and args.deep:
                bar.update(e.total_size)
    emit(args, results, format_verify(results, terminal_width()))
    if not codes:
        return 0
    failed = ", ".join(str(r["version"]) for r in results if not r["ok"])
    print(f"error: {len(codes)} of {len(results)} exports failed ({failed})", file=sys.stderr)
    return max(codes)
