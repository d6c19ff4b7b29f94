"""The ``cloud-exporter`` command line: parser, exit codes, publish/list/latest/demo.

The other commands live in cli_<command>.py, shared helpers in cli_common.py and cli_format.py;
these cli*.py modules are the only ones that print (the library logs).

Exit codes: 0 success; 1 unexpected error; 2 invalid arguments or source; 3 no such export (or
none at all for ``latest``); 4 an export failed verification; 5 version conflict; 6 storage
failure (permission denied, retries exhausted); 7 prune incomplete (run it again).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import cli_adopt, cli_prune, cli_sync, cli_verify, resume
from ._version import __version__
from .cli_common import add_base, add_command, emit, progress, storage_options
from .cli_format import (
    POSITIVE,
    VERSION,
    format_table,
    nested,
    publish_result,
    terminal_width,
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
from .exports import latest_export, list_exports
from .publishing import publish

__all__ = ["main", "storage_options"]

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
    retry_log = logging.getLogger("cloud_exporter.retry")
    retry_level = retry_log.level  # restored after the run: a caller's process keeps its own
    if not args.verbose:  # retry chatter is for --verbose; the final error says it all
        retry_log.setLevel(logging.ERROR)
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
    finally:
        retry_log.setLevel(retry_level)


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


def _register_publish(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        common,
        "publish",
        _cmd_publish,
        help="publish a SavedModel directory as a new version",
        description="Publish SOURCE as a new version under BASE, atomically: the version "
        "becomes visible only once complete. Example: cloud-exporter publish ./model "
        "gs://bucket/models/ranker --metadata metrics.loss=0.31 --keep 5",
    )
    p.add_argument("source", help="local directory a SavedModel was saved to (saved_model.pb)")
    add_base(p)
    p.add_argument(
        "--export-version",
        type=VERSION,
        metavar="N",
        help="version number to publish as (default: a new one above every existing version, "
        "near the current Unix time)",
    )
    p.add_argument("--version", dest="export_version", type=VERSION, help=argparse.SUPPRESS)
    p.add_argument(
        "--assets-extra",
        action="append",
        default=[],
        metavar="DEST=SRC",
        help="also publish local file SRC as assets.extra/DEST, repeatable "
        "(--assets-extra vocab.txt=./vocab.txt)",
    )
    p.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata stored in the version's marker, repeatable; values are JSON when they "
        "parse, dotted keys nest (--metadata metrics.loss=0.31 --metadata tag=nightly)",
    )
    p.add_argument(
        "--mode",
        choices=["staged", "direct"],
        default="staged",
        help="staged (default): upload to a staging area, then copy into place server-side; "
        "direct: upload straight into the version directory (fewer copies, same atomicity)",
    )
    p.add_argument("--keep", type=POSITIVE, metavar="N", help="prune to the newest N afterwards")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="upload every file even if an interrupted publish left proven copies in staging",
    )


def _register_list(sub: Any, common: argparse.ArgumentParser) -> None:
    add_base(
        add_command(sub, common, "list", _cmd_list, help="list committed exports, oldest first")
    )


def _register_latest(sub: Any, common: argparse.ArgumentParser) -> None:
    what = "print the newest committed export's URI"
    add_base(add_command(sub, common, "latest", _cmd_latest, help=what))


def _register_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    what = "publish a small real model to local disk"
    p = add_command(sub, common, "demo", _cmd_demo, help=what)
    p.add_argument(
        "--base",
        default=os.path.join(os.getcwd(), "demo-exports"),
        help="where to publish (default: ./demo-exports)",
    )
    p.add_argument(
        "--count", type=POSITIVE, default=4, metavar="N", help="versions to publish (default 4)"
    )
    p.add_argument(
        "--keep", type=POSITIVE, default=3, metavar="N", help="newest versions to keep (default 3)"
    )


# One line per subcommand module: each registrar adds its subparser (parents=[common]).
SUBCOMMANDS: tuple[Callable[[Any, argparse.ArgumentParser], None], ...] = (
    _register_publish,
    _register_list,
    _register_latest,
    cli_verify.register,
    cli_prune.register,
    _register_demo,
    cli_adopt.register,
    cli_sync.register,
)


# ---- the commands ------------------------------------------------------------------------


def _cmd_publish(args: argparse.Namespace) -> int:
    extras = {}
    for item in args.assets_extra:
        dest, sep, src = item.partition("=")
        if not sep:
            raise InvalidArgumentError(f"--assets-extra {item!r} must look like DEST=SRC")
        extras[dest] = src
    metadata = nested(args.metadata, "--metadata")
    with progress(args, "upload", None) as bar, resume.collect() as sessions:
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
            on_total=bar.set_total if bar else None,
        )
    emit(args, *publish_result(info, sessions))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    exports = list_exports(args.base, storage_options=storage_options(args.storage_option))
    emit(args, [e.to_dict() for e in exports], format_table(exports, terminal_width()))
    return 0


def _cmd_latest(args: argparse.Namespace) -> int:
    info = latest_export(args.base, storage_options=storage_options(args.storage_option))
    if info is None:
        raise ExportNotFoundError(f"no committed export under {args.base}")
    emit(args, info.to_dict(), info.uri)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .cli_demo import run_demo

    return run_demo(
        args.base, count=args.count, keep=args.keep, as_json=args.json, verbose=args.verbose
    )


if __name__ == "__main__":
    sys.exit(main())
