"""The ``cloud-exporter adopt`` command: commit existing unmarked version directories."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .adopt import AdoptReport, adopt
from .cli_common import add_command, storage_options


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``adopt`` subcommand to the CLI's subparsers."""
    p = add_command(
        sub,
        common,
        "adopt",
        _run,
        help="write markers for complete version dirs that have none (stock exports, copies)",
        description="Commit every complete, unmarked <BASE>/<version>/ directory (stock "
        "tf.estimator exports, copies made by other tools) so that list/latest/verify/prune "
        "treat it like any export. Partial directories are refused with the reason.",
    )
    p.add_argument("base", metavar="BASE", help="the export base, e.g. gs://bucket/models/NAME")
    p.add_argument(
        "--dry-run", action="store_true", help="show what would be adopted; write nothing"
    )


def _run(args: argparse.Namespace) -> int:
    report = adopt(
        args.base, dry_run=args.dry_run, storage_options=storage_options(args.storage_option)
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else _text(report))
    return 0


def _text(report: AdoptReport) -> str:
    verb = "would adopt" if report.dry_run else "adopted"
    lines = [f"{verb} {info.uri} ({len(info.files)} files)" for info in report.adopted]
    lines += [f"already committed: version {v}" for v in report.already]
    lines += [f"refused version {v}: {why}" for v, why in sorted(report.refused.items())]
    if not lines:
        lines.append(f"nothing to adopt under {report.base}")
    return "\n".join(lines)
