"""The ``cloud-exporter prune`` (alias ``gc``) command: delete old exports and leftovers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_common import add_base, add_command, emit, progress, storage_options
from .cli_format import HOURS, POSITIVE, SECONDS, VERSION, format_report
from .errors import InvalidArgumentError, PruneIncompleteError
from .retention import PruneReport, prune


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``prune`` subcommand (alias ``gc``) to the CLI's subparsers."""
    p = add_command(
        sub,
        common,
        "prune",
        _run,
        aliases=["gc"],
        help="delete old exports and leftovers",
        description="Delete every committed export no --keep* option keeps, then leftovers of "
        "interrupted runs older than --grace-seconds. Example: cloud-exporter prune "
        "s3://b/models/ranker --keep 3 --keep-best metrics.loss:min:1 --dry-run",
    )
    add_base(p)
    p.add_argument(
        "--keep", type=POSITIVE, default=5, metavar="N", help="keep the newest N (default 5)"
    )
    p.add_argument(
        "--keep-all", action="store_true", help="keep every export (only clean leftovers)"
    )
    p.add_argument(
        "--keep-every-hours",
        type=HOURS,
        metavar="H",
        help="also keep one export per H hours of age (--keep-every-hours 24)",
    )
    p.add_argument(
        "--keep-best",
        metavar="METRIC:min|max:N",
        help="also keep the N best by a numeric metadata value; dotted names reach nested keys "
        "(--keep-best metrics.loss:min:2)",
    )
    p.add_argument(
        "--pin",
        type=VERSION,
        action="append",
        default=[],
        metavar="VERSION",
        help="never delete this version, repeatable (--pin 1700000000)",
    )
    p.add_argument(
        "--grace-seconds",
        type=SECONDS,
        default=3600,
        metavar="S",
        help="leave leftovers younger than S seconds alone: a publish may still be writing "
        "them (default 3600)",
    )
    p.add_argument("--dry-run", action="store_true", help="report what would go; delete nothing")


def _keep_best(text: str | None) -> tuple[str, str, int] | None:
    if not text:
        return None
    rest, _, n = text.rpartition(":")
    metric, _, mode = rest.rpartition(":")
    if not metric or mode not in ("min", "max") or not n.isdigit() or int(n) < 1:
        raise InvalidArgumentError(
            f"--keep-best {text!r} must look like METRIC:min|max:N (--keep-best metrics.loss:min:2)"
        )
    return metric, mode, int(n)


def _run(args: argparse.Namespace) -> int:
    keep_best = _keep_best(args.keep_best)
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
    emit(args, report.to_dict(), format_report(report))
    return 0
