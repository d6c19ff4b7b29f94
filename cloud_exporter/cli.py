"""The ``cloud-exporter`` command line. The only module that prints.

Exit codes: 0 success; 1 unexpected error; 2 invalid arguments or source; 3 no such export (or
none at all for ``latest``); 4 an export failed verification; 5 version conflict; 6 storage
failure (permission denied, retries exhausted); 7 prune incomplete (run it again).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .cli_format import format_report, format_table
from .errors import (
    CloudExporterError,
    CorruptExportError,
    ExportNotFoundError,
    InvalidArgumentError,
    PruneIncompleteError,
    StorageError,
    VersionConflictError,
)
from .exports import latest_export, list_exports, verify_export
from .publish import publish
from .retention import PruneReport, prune

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (InvalidArgumentError, 2),
    (ExportNotFoundError, 3),
    (CorruptExportError, 4),
    (VersionConflictError, 5),
    (PruneIncompleteError, 7),
    (StorageError, 6),
    (CloudExporterError, 1),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            logging.getLogger("cloud_exporter.cli").exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloud-exporter", description="Atomic SavedModel exports to GCS, S3 and local disk."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--verbose", "-v", action="store_true", help="log and show tracebacks")
    common.add_argument(
        "-o",
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option (dotted keys nest: client_kwargs.endpoint_url=URL); "
        "pass credentials through the environment, not here",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("publish", parents=[common], help="publish a SavedModel directory")
    p.add_argument("source")
    p.add_argument("base")
    p.add_argument("--version", dest="export_version", type=int)
    p.add_argument("--assets-extra", action="append", default=[], metavar="DEST=SRC")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--mode", choices=["staged", "direct"], default="staged")
    p.add_argument("--keep", type=int, help="prune to the newest N after publishing")
    p.set_defaults(run=_cmd_publish)

    p = sub.add_parser("list", parents=[common], help="list committed exports")
    p.add_argument("base")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("latest", parents=[common], help="show the newest committed export")
    p.add_argument("base")
    p.set_defaults(run=_cmd_latest)

    p = sub.add_parser("verify", parents=[common], help="verify one or every export")
    p.add_argument("base")
    p.add_argument("version", nargs="?", type=int)
    p.add_argument("--deep", action="store_true", help="also compare checksums (CRC32C)")
    p.add_argument(
        "--download", action="store_true", help="with --deep: re-read every file's bytes"
    )
    p.set_defaults(run=_cmd_verify)

    for name in ("prune", "gc"):
        p = sub.add_parser(name, parents=[common], help="delete old exports and leftovers")
        p.add_argument("base")
        p.add_argument("--keep", type=int, default=5, help="newest N to keep (default 5)")
        p.add_argument("--keep-all", action="store_true", help="keep every export (keep=None)")
        p.add_argument("--keep-every-hours", type=float)
        p.add_argument("--keep-best", metavar="METRIC:min|max:N")
        p.add_argument("--pin", type=int, action="append", default=[], metavar="VERSION")
        p.add_argument("--grace-seconds", type=float, default=3600)
        p.add_argument("--dry-run", action="store_true")
        p.set_defaults(run=_cmd_prune)

    p = sub.add_parser("demo", parents=[common], help="publish a small real model locally")
    p.add_argument("--base", default=os.path.join(os.getcwd(), "demo-exports"))
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--keep", type=int, default=3)
    p.set_defaults(run=_cmd_demo)
    return parser


def storage_options(pairs: list[str]) -> dict[str, Any] | None:
    """Parse KEY=VALUE options; values are JSON when they parse, dotted keys nest."""
    options: dict[str, Any] = {}
    for key, value in _pairs(pairs, "--storage-option"):
        target = options
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return options or None


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


def _cmd_publish(args: argparse.Namespace) -> int:
    extras = {}
    for item in args.assets_extra:
        dest, sep, src = item.partition("=")
        if not sep:
            raise InvalidArgumentError(f"--assets-extra {item!r} must look like DEST=SRC")
        extras[dest] = src
    info = publish(
        args.source,
        args.base,
        version=args.export_version,
        assets_extra=extras or None,
        metadata=dict(_pairs(args.metadata, "--metadata")) or None,
        mode=args.mode,
        keep=args.keep,
        storage_options=storage_options(args.storage_option),
        progress=_progress_bar(args.source),
    )
    _emit(args, info.to_dict(), f"published {info.uri} ({len(info.files)} files)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    exports = list_exports(args.base, storage_options=storage_options(args.storage_option))
    if args.json:
        print(json.dumps([e.to_dict() for e in exports], indent=2))
    else:
        print(format_table(exports))
    return 0


def _cmd_latest(args: argparse.Namespace) -> int:
    info = latest_export(args.base, storage_options=storage_options(args.storage_option))
    if info is None:
        print(f"no committed export under {args.base}", file=sys.stderr)
        return 3
    _emit(args, info.to_dict(), info.uri)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    options = storage_options(args.storage_option)
    if args.version is not None:
        versions = [args.version]
    else:
        versions = [e.version for e in list_exports(args.base, storage_options=options)]
    results, corrupt, missing = [], 0, 0
    for version in versions:
        try:
            info = verify_export(
                args.base, version, deep=args.deep, download=args.download, storage_options=options
            )
            results.append({"version": version, "ok": True, "uri": info.uri})
        except (CorruptExportError, ExportNotFoundError) as exc:
            corrupt += isinstance(exc, CorruptExportError)
            missing += isinstance(exc, ExportNotFoundError)
            results.append({"version": version, "ok": False, "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(
                f"{r['version']}  {'OK' if r['ok'] else 'FAILED'}  {r.get('uri', r.get('error'))}"
            )
    if corrupt:
        return 4
    if missing or not versions:
        if not versions:
            print(f"no committed export under {args.base}", file=sys.stderr)
        return 3
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    keep_best = None
    if args.keep_best:
        metric, _, rest = args.keep_best.partition(":")
        mode, _, n = rest.partition(":")
        if not n.isdigit():
            raise InvalidArgumentError("--keep-best must look like METRIC:min|max:N")
        keep_best = (metric, mode, int(n))
    try:
        report = prune(
            args.base,
            keep=None if args.keep_all else args.keep,
            keep_every_hours=args.keep_every_hours,
            keep_best=keep_best,
            pinned=args.pin,
            grace_seconds=args.grace_seconds,
            dry_run=args.dry_run,
            storage_options=storage_options(args.storage_option),
        )
    except PruneIncompleteError as exc:
        if isinstance(exc.report, PruneReport):
            print(format_report(exc.report), file=sys.stderr)
        raise
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .cli_demo import run_demo

    return run_demo(args.base, count=args.count, keep=args.keep, as_json=args.json)


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    print(json.dumps(doc, indent=2) if args.json else text)


def _progress_bar(source: str) -> Any:
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    total = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(source) for f in files
    )
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="upload", leave=False)
    return bar.update


if __name__ == "__main__":
    sys.exit(main())
