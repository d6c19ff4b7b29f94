"""The ``cloud-exporter`` command line. The only module that prints (with its cli_* helpers).

Exit codes: 0 success; 1 unexpected error; 2 invalid arguments or source; 3 no such export (or
none at all for ``latest``); 4 an export failed verification; 5 version conflict; 6 storage
failure (permission denied, retries exhausted); 7 prune incomplete (run it again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import __version__, cli_adopt, cli_sync, resume
from .cli_format import (
    HOURS,
    POSITIVE,
    SECONDS,
    VERSION,
    Progress,
    format_report,
    format_table,
    format_verify,
    nested,
    publish_result,
    terminal_width,
    wants_progress,
)
from .errors import (
    CloudExporterError,
    CorruptExportError,
    ExportNotFoundError,
    InvalidArgumentError,
    PruneIncompleteError,
    StorageError,
    TransientStorageError,
    VersionConflictError,
)
from .exports import latest_export, list_exports, verify_export
from .publish import publish
from .retention import PruneReport, prune
from .source import scan_source

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (InvalidArgumentError, 2),
    (ExportNotFoundError, 3),
    (CorruptExportError, 4),
    (VersionConflictError, 5),
    (PruneIncompleteError, 7),
    (StorageError, 6),
    (CloudExporterError, 1),
]
GLOBAL_OPTIONS = ("json", "verbose", "storage_option")
EPILOG = """\
global options (before or after the command): --json, --verbose/-v, -o KEY=VALUE
exit codes: 0 ok, 1 unexpected, 2 invalid argument or source, 3 no such export,
  4 verification failed, 5 version conflict, 6 storage failure, 7 prune incomplete (run again)
example: cloud-exporter publish ./model s3://bucket/models/ranker --keep 5"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    _merge_globals(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # retry chatter is for --verbose; the final error says it all
        logging.getLogger("cloud_exporter.retry").setLevel(logging.ERROR)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            logging.getLogger("cloud_exporter.cli").exception("failed")
        exc = _cli_error(exc, args)
        code = next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)
        return _fail(args, exc, code)


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {message}", file=sys.stderr)
    if args.json:
        doc = {"error": {"message": message, "type": type(exc).__name__, "exit_code": code}}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    return code


def _cli_error(exc: Exception, args: argparse.Namespace) -> Exception:
    """Library errors in CLI words: flags instead of Python parameters."""
    if isinstance(exc, TypeError) and args.storage_option:
        found = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        given = {item.partition("=")[0].split(".")[0] for item in args.storage_option}
        if found and found.group(1) in given:
            return InvalidArgumentError(
                f"-o {found.group(1)}: not an option of this storage backend; see its fsspec "
                "documentation for the options it takes"
            )
    if isinstance(exc, TransientStorageError):
        text = str(exc).replace(
            "run again later, or raise the RetryPolicy bounds",
            "check the endpoint (-o client_kwargs.endpoint_url=...) and the network, then run "
            "the command again (--verbose shows each retry)",
        )
        return TransientStorageError(text)
    return exc


# ---- the parser --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, not the usage block
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _global_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument(
        "--json", dest=prefix + "json", action="store_true", help="machine-readable output"
    )
    parser.add_argument(
        "--verbose",
        "-v",
        dest=prefix + "verbose",
        action="store_true",
        help="show log lines (retries included) and tracebacks",
    )
    parser.add_argument(
        "-o",
        "--storage-option",
        dest=prefix + "storage_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option, repeatable; values are JSON when they parse, dotted keys "
        "nest (-o client_kwargs.endpoint_url=http://127.0.0.1:9000); pass credentials "
        "through the environment, not here",
    )


def _merge_globals(args: argparse.Namespace) -> None:
    """Global options given before the command join those given after it."""
    args.json = args.json or args.g_json
    args.verbose = args.verbose or args.g_verbose
    args.storage_option = [*args.g_storage_option, *args.storage_option]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cloud-exporter",
        description="Atomic SavedModel exports to GCS, S3 and local disk.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="program version"
    )
    _global_options(parser, prefix="g_")
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    sub = parser.add_subparsers(
        required=True,
        metavar="COMMAND",
        title="commands",
        help="one of these; 'cloud-exporter COMMAND --help' shows its options",
    )
    for register in SUBCOMMANDS:
        register(sub, common)
    return parser


def _base(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "base", help="export base URI holding one directory per version (s3://b/m, gs://b/m, "
        "/local/dir)"
    )  # fmt: skip


def _register_publish(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "publish", parents=[common], help="publish a SavedModel directory as a new version",
        description="Publish SOURCE as a new version under BASE, atomically: the version "
        "becomes visible only once complete. Example: cloud-exporter publish ./model "
        "gs://bucket/models/ranker --metadata metrics.loss=0.31 --keep 5",
    )  # fmt: skip
    p.add_argument("source", help="local directory a SavedModel was saved to (saved_model.pb)")
    _base(p)
    p.add_argument(
        "--export-version", type=VERSION, metavar="N", help="version number to publish as "
        "(default: a new one above every existing version, near the current Unix time)"
    )  # fmt: skip
    p.add_argument("--version", dest="export_version", type=VERSION, help=argparse.SUPPRESS)
    p.add_argument(
        "--assets-extra", action="append", default=[], metavar="DEST=SRC",
        help="also publish local file SRC as assets.extra/DEST, repeatable "
        "(--assets-extra vocab.txt=./vocab.txt)",
    )  # fmt: skip
    p.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE",
        help="metadata stored in the version's marker, repeatable; values are JSON when they "
        "parse, dotted keys nest (--metadata metrics.loss=0.31 --metadata tag=nightly)",
    )  # fmt: skip
    p.add_argument(
        "--mode", choices=["staged", "direct"], default="staged",
        help="staged (default): upload to a staging area, then copy into place server-side; "
        "direct: upload straight into the version directory (fewer copies, same atomicity)",
    )  # fmt: skip
    p.add_argument("--keep", type=POSITIVE, metavar="N", help="prune to the newest N afterwards")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="upload every file even if an interrupted publish left proven copies in staging",
    )
    p.set_defaults(run=_cmd_publish)


def _register_list(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common], help="list committed exports, oldest first")
    _base(p)
    p.set_defaults(run=_cmd_list)


def _register_latest(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("latest", parents=[common], help="print the newest committed export's URI")
    _base(p)
    p.set_defaults(run=_cmd_latest)


def _register_verify(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", parents=[common], help="check one or every export is intact")
    _base(p)
    p.add_argument("version", nargs="?", type=VERSION, help="version to check (default: all)")
    p.add_argument("--deep", action="store_true", help="also compare checksums (CRC32C)")
    p.add_argument(
        "--download", action="store_true", help="with --deep: re-read every file's bytes"
    )
    p.set_defaults(run=_cmd_verify)


def _register_prune(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prune", aliases=["gc"], parents=[common], help="delete old exports and leftovers",
        description="Delete every committed export no --keep* option keeps, then leftovers of "
        "interrupted runs older than --grace-seconds. Example: cloud-exporter prune "
        "s3://b/models/ranker --keep 3 --keep-best metrics.loss:min:1 --dry-run",
    )  # fmt: skip
    _base(p)
    p.add_argument(
        "--keep", type=POSITIVE, default=5, metavar="N", help="keep the newest N (default 5)"
    )
    p.add_argument(
        "--keep-all", action="store_true", help="keep every export (only clean leftovers)"
    )
    p.add_argument(
        "--keep-every-hours", type=HOURS, metavar="H",
        help="also keep one export per H hours of age (--keep-every-hours 24)",
    )  # fmt: skip
    p.add_argument(
        "--keep-best", metavar="METRIC:min|max:N",
        help="also keep the N best by a numeric metadata value; dotted names reach nested keys "
        "(--keep-best metrics.loss:min:2)",
    )  # fmt: skip
    p.add_argument(
        "--pin", type=VERSION, action="append", default=[], metavar="VERSION",
        help="never delete this version, repeatable (--pin 1700000000)",
    )  # fmt: skip
    p.add_argument(
        "--grace-seconds", type=SECONDS, default=3600, metavar="S",
        help="leave leftovers younger than S seconds alone: a publish may still be writing "
        "them (default 3600)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="report what would go; delete nothing")
    p.set_defaults(run=_cmd_prune)


def _register_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="publish a small real model to local disk")
    p.add_argument(
        "--base", default=os.path.join(os.getcwd(), "demo-exports"),
        help="where to publish (default: ./demo-exports)",
    )  # fmt: skip
    p.add_argument(
        "--count", type=POSITIVE, default=4, metavar="N", help="versions to publish (default 4)"
    )
    p.add_argument(
        "--keep", type=POSITIVE, default=3, metavar="N", help="newest versions to keep (default 3)"
    )
    p.set_defaults(run=_cmd_demo)


# One line per subcommand module: each registrar adds its subparser (parents=[common]).
SUBCOMMANDS: tuple[Callable[[Any, argparse.ArgumentParser], None], ...] = (
    _register_publish,
    _register_list,
    _register_latest,
    _register_verify,
    _register_prune,
    _register_demo,
    cli_adopt.register,
    cli_sync.register,
)


# ---- option values -----------------------------------------------------------------------


def storage_options(pairs: list[str]) -> dict[str, Any] | None:
    """Parse KEY=VALUE options; values are JSON when they parse, dotted keys nest."""
    return nested(pairs, "-o") or None


@contextlib.contextmanager
def progress(
    args: argparse.Namespace, label: str, total: int | None, delay: float = 0.0
) -> Iterator[Progress | None]:
    """A Progress on a terminal (closed on exit), else None."""
    if not wants_progress(args.json):
        yield None
        return
    with Progress(label, total, delay=delay) as bar:
        yield bar


# ---- the commands ------------------------------------------------------------------------


def _cmd_publish(args: argparse.Namespace) -> int:
    extras = {}
    for item in args.assets_extra:
        dest, sep, src = item.partition("=")
        if not sep:
            raise InvalidArgumentError(f"--assets-extra {item!r} must look like DEST=SRC")
        extras[dest] = src
    metadata = nested(args.metadata, "--metadata")
    total = sum(f.size for f in scan_source(args.source, extras or None))
    with progress(args, "upload", total) as bar, resume.collect() as sessions:
        info = publish(
            args.source,
            args.base,
            version=args.export_version,
            assets_extra=extras or None,
            metadata=metadata or None,
            mode=args.mode,
            keep=args.keep,
            storage_options=storage_options(args.storage_option),
            progress=bar.update if bar else None,
            resume=args.resume,
        )
    _emit(args, *publish_result(info, sessions))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    exports = list_exports(args.base, storage_options=storage_options(args.storage_option))
    if args.json:
        print(json.dumps([e.to_dict() for e in exports], indent=2, ensure_ascii=False))
    else:
        print(format_table(exports, terminal_width()))
    return 0


def _cmd_latest(args: argparse.Namespace) -> int:
    info = latest_export(args.base, storage_options=storage_options(args.storage_option))
    if info is None:
        raise ExportNotFoundError(f"no committed export under {args.base}")
    _emit(args, info.to_dict(), info.uri)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    options = storage_options(args.storage_option)
    if args.version is not None:  # one version: its result, or its one-line error
        with progress(args, "verify", None, delay=0 if args.deep else 1.0):
            info = verify_export(
                args.base,
                args.version,
                deep=args.deep,
                download=args.download,
                storage_options=options,
            )
        _emit(args, {"version": info.version, "ok": True, "uri": info.uri}, f"OK {info.uri}")
        return 0
    exports = list_exports(args.base, storage_options=options)
    if not exports:
        raise ExportNotFoundError(f"no committed export under {args.base}")
    results, codes = [], []
    total = sum(e.total_size for e in exports) if args.deep else None
    with progress(args, "verify", total, delay=0 if args.deep else 1.0) as bar:
        for e in exports:
            try:
                info = verify_export(
                    args.base,
                    e.version,
                    deep=args.deep,
                    download=args.download,
                    storage_options=options,
                )
                results.append({"version": e.version, "ok": True, "uri": info.uri})
            except (CorruptExportError, ExportNotFoundError) as exc:
                codes.append(4 if isinstance(exc, CorruptExportError) else 3)
                results.append({"version": e.version, "ok": False, "error": str(exc)})
            if bar and args.deep:
                bar.update(e.total_size)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        print(format_verify(results, terminal_width()))
    if not codes:
        return 0
    failed = ", ".join(str(r["version"]) for r in results if not r["ok"])
    print(f"error: {len(codes)} of {len(results)} exports failed ({failed})", file=sys.stderr)
    return max(codes)


def _cmd_prune(args: argparse.Namespace) -> int:
    keep_best = None
    if args.keep_best:
        rest, _, n = args.keep_best.rpartition(":")
        metric, _, mode = rest.rpartition(":")
        if not metric or mode not in ("min", "max") or not n.isdigit() or int(n) < 1:
            raise InvalidArgumentError(
                f"--keep-best {args.keep_best!r} must look like METRIC:min|max:N "
                "(--keep-best metrics.loss:min:2)"
            )
        keep_best = (metric, mode, int(n))
    try:
        with progress(args, "prune", None, delay=1.0):
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
        if isinstance(exc.report, PruneReport) and not args.json:
            print(format_report(exc.report), file=sys.stderr)
        raise
    doc = report.to_dict()
    print(json.dumps(doc, indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .cli_demo import run_demo

    return run_demo(
        args.base, count=args.count, keep=args.keep, as_json=args.json, verbose=args.verbose
    )


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False) if args.json else text)


if __name__ == "__main__":
    sys.exit(main())
