"""The markdown report (stdout, benchmarks/results/latest.md, docs/performance.md) and JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .checks import RunResults, all_checks
from .many_bench import render_many
from .stats import Summary

MiB = 1 << 20
DOCS_START = "<!-- benchmark-report:start -->"
DOCS_END = "<!-- benchmark-report:end -->"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(not measured in this run)"]

    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def _targets(run: RunResults) -> list[str]:
    rows = [
        [c.target, c.what, c.measured, c.spread, c.limit, f"**{c.status}**", c.note]
        for c in all_checks(run)
    ]
    return _table(["#", "Target", "Median", "Min-max", "Limit", "Result", "Notes"], rows)


def _timings(run: RunResults) -> list[str]:
    rows = []
    for t in run.timings:
        for op, values in t.times.items():
            s = Summary.of(values)
            counts = t.requests.get(op)
            req = f"{counts.mutating} / {counts.total}" if counts and counts.total else "—"
            rate = t.nbytes / MiB / s.median if s.median > 0 else 0.0
            rows.append([t.backend, t.workload, op, s.fmt(3), s.spread(3), f"{rate:.0f}", req])
    header = [
        "Store",
        "Workload",
        "Operation",
        "Median s",
        "Min-max s",
        "MiB/s",
        "HTTP mutating / total",
    ]
    return _table(header, rows)


def _requests(run: RunResults) -> list[str]:
    rows = []

    def add(backend: str, what: str, c: object) -> None:
        if c is None:
            return
        rows.append(
            [
                backend,
                what,
                str(c.total),
                str(c.mutating),
                str(c.multipart_extra),
                str(c.lists),
                str(c.reads),
                str(c.infos),
                c.detail(),
            ]
        )

    for t in run.timings:
        for op in ("raw put", "raw copy", "staged publish", "direct publish"):
            if t.workload == "synthetic" and op in t.requests:
                add(t.backend, f"{op} ({t.files} files)", t.requests[op])
    for r in run.requests:
        add(r.backend, f"latest_export ({r.base_exports} x {r.base_objects_per_export})", r.latest)
        add(r.backend, f"prune keep=5 ({r.pruned} deleted)", r.prune)
        add(r.backend, f"list_exports ({r.list_exports} exports)", r.list_inprocess)
    header = [
        "Store",
        "Operation",
        "Total",
        "Mutating",
        "Multipart extra",
        "List",
        "Get",
        "Head/info",
        "By operation",
    ]
    return _table(header, rows)


def _fsspec(run: RunResults) -> list[str]:
    rows = []
    for r in run.requests:
        for mode, counts in r.publish.items():
            f = counts.get("fsspec") or {}
            if f:
                by = ", ".join(f"{m} {n}" for m, n in sorted(f["by_method"].items()))
                rows.append(
                    [
                        r.backend,
                        f"{mode} publish ({r.publish_files} files)",
                        str(f["calls"]),
                        str(f["mutating"]),
                        by,
                    ]
                )
    if not rows:
        return []
    header = ["Store", "Operation", "fsspec calls", "Mutating", "By method"]
    return [
        "",
        "fsspec-level calls (cloud_exporter.testing.FaultyFileSystem as recorder):",
        "",
        *_table(header, rows),
    ]


def _other(run: RunResults) -> list[str]:
    lines = []
    for m in run.memory:
        if not m.error:
            lines.append(
                f"- Memory, {m.backend}: RSS {m.rss_before / MiB:.0f} MiB before the publish, "
                f"+{m.growth / MiB:.0f} MiB at peak, {m.source_bytes / MiB:.0f} MiB in "
                f"{m.seconds:.1f} s."
            )
    est = run.estimator
    if est is not None and not est.error:
        stock = Summary.of(est.stock)
        line = (
            f"- Estimator ({est.tf_version}, {est.export_bytes / 1024:.0f} KiB SavedModel): "
            f"stock LatestExporter {stock.fmt(3)} s ({stock.spread(3)})"
        )
        if est.ours:
            ours = Summary.of(est.ours)
            line += f", ours {ours.fmt(3)} s ({ours.spread(3)}) per export"
        lines.append(line + f"; {est.ours_how}.")
    return lines


def _machine(run: RunResults) -> list[str]:
    m = run.machine
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return [
        f"- CPU: {m['cpu']}, {m['cores']} logical cores; RAM {m['ram_gib']} GiB",
        f"- OS: {m['os']}; Python {m['python']}",
        f"- Packages: {packages}",
        f"- Commit: {m['commit']}; run at {m['date']}",
        f"- Load average (1/5/15 min): {m['load_start']} at the start, "
        f"{m.get('load_end', 'unknown')} at the end",
    ]


def render(run: RunResults) -> str:
    lines = [
        f"Profile `{run.profile}`: `{run.command}`; library concurrency {run.concurrency}. "
        "Each repetition runs our operation and its baselines back to back (order rotated "
        "per repetition); medians over repetitions, min-max in the next column.",
        "",
    ]
    lines += [f"- Workload {name}: {desc}" for name, desc in run.workloads.items()]
    lines += ["", "### Targets", "", *_targets(run)]
    lines += ["", "### Publish and baselines", "", *_timings(run)]
    lines += ["", "### Requests per operation (HTTP, counted at the client)", "", *_requests(run)]
    lines += _fsspec(run)
    if run.sync:
        from .sync_bench import render as render_sync

        lines += ["", "### Sync vs raw fs.get (issue 16: <= 1.10x)", "", render_sync(run.sync)]
    lines += render_many(run.many)
    other = _other(run)
    if other:
        lines += ["", "### Memory and estimator", "", *other]
    if run.notes:
        lines += ["", "### Notes", "", *[f"- {n}" for n in run.notes]]
    lines += ["", "### Machine", "", *_machine(run)]
    return "\n".join(lines) + "\n"


def write_outputs(run: RunResults, text: str, out_md: Path, docs: Path | None) -> None:
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("# cloud_exporter benchmark report\n\n" + text)
    out_md.with_suffix(".json").write_text(json.dumps(run.to_dict(), indent=1, default=str))
    if docs is not None:
        update_docs(docs, text)


def update_docs(docs: Path, text: str) -> None:
    """Replace the block between the report markers in docs/performance.md."""
    current = docs.read_text() if docs.exists() else ""
    block = f"{DOCS_START}\n{text}{DOCS_END}"
    if DOCS_START in current and DOCS_END in current:
        pattern = re.compile(re.escape(DOCS_START) + ".*?" + re.escape(DOCS_END), re.S)
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current + ("\n" if current else "") + "## Latest run\n\n" + block + "\n"
    docs.write_text(updated)
