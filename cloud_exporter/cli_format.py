"""Plain-text rendering of exports and prune reports for the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .marker import ExportInfo
from .retention import PruneReport


def format_table(exports: Sequence[ExportInfo]) -> str:
    """A plain table of exports, one row each."""
    rows = [("VERSION", "CREATED (UTC)", "FILES", "BYTES", "METADATA")]
    for e in exports:
        meta = json.dumps(e.metadata, sort_keys=True)
        rows.append(
            (
                str(e.version),
                e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                str(len(e.files)),
                str(e.total_size),
                meta if len(meta) <= 60 else meta[:57] + "...",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    if not exports:
        lines.append("(no committed exports)")
    return "\n".join(lines)


def format_report(report: PruneReport) -> str:
    verb = "would delete" if report.dry_run else "deleted"
    lines = [f"prune {report.base}{' (dry run)' if report.dry_run else ''}"]
    for version, reasons in sorted(report.kept.items()):
        lines.append(f"  kept     {version}  ({', '.join(reasons)})")
    lines += [f"  {verb:<8} {v}" for v in report.deleted]
    lines += [f"  skipped  {v}  ({why})" for v, why in sorted(report.skipped.items())]
    orphan_verb = "would remove" if report.dry_run else "removed"
    lines += [f"  orphan {orphan_verb}: {o}" for o in report.orphans_removed]
    lines += [f"  orphan younger than grace, kept: {o}" for o in report.orphans_waiting]
    lines += [f"  REMAINING: {p}" for p in report.remaining]
    return "\n".join(lines)
