"""The issue's targets, evaluated on one run's results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .estimator_bench import EstimatorResult
from .memory import MemoryResult
from .reqs import RequestResults
from .startup import ImportResult
from .stats import Check, Summary
from .transfer import Timings

MiB = 1 << 20
GCS_BATCH = 100  # gcsfs deletes up to 100 objects per batch request on GCS
LIMITS = {
    "staged / (put + copy)": ("1", 1.10),
    "direct / put": ("2", 1.05),
    "publish / copytree": ("3", 1.10),
}


@dataclass
class RunResults:
    """Everything one run measured."""

    profile: str
    command: str
    machine: dict[str, Any]
    concurrency: int
    workloads: dict[str, str] = field(default_factory=dict)  # name -> description
    timings: list[Timings] = field(default_factory=list)
    requests: list[RequestResults] = field(default_factory=list)
    memory: list[MemoryResult] = field(default_factory=list)
    estimator: EstimatorResult | None = None
    imports: ImportResult | None = None
    sync: list[dict[str, Any]] = field(default_factory=list)  # sync_bench.run_sync results
    many: list[Any] = field(default_factory=list)  # many_bench.ManyRow
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "command": self.command,
            "machine": self.machine,
            "concurrency": self.concurrency,
            "workloads": self.workloads,
            "timings": [t.to_dict() for t in self.timings],
            "requests": [r.to_dict() for r in self.requests],
            "memory": [m.to_dict() for m in self.memory],
            "estimator": self.estimator.to_dict() if self.estimator else None,
            "imports": self.imports.to_dict() if self.imports else None,
            "sync": self.sync,
            "many": [m.to_dict() for m in self.many],
            "notes": self.notes,
        }


def ratio_checks(timings: list[Timings]) -> list[Check]:
    checks = []
    for t in timings:
        for name, values in t.ratios.items():
            if not values:
                continue
            s = Summary.of(values)
            if name not in LIMITS:  # a reference point, e.g. the cost of the checksums alone
                what = f"{t.backend} {t.workload}: {name} (reference)"
                checks.append(Check("3", what, s.fmt(), s.spread(), "", "info", f"n={s.n}"))
                continue
            target, bound = LIMITS[name]
            checks.append(
                Check.compare(
                    target,
                    f"{t.backend} {t.workload}: {name}",
                    s.median,
                    bound,
                    spread=s.spread(),
                    note=f"n={s.n}",
                )
            )
    return checks


def estimator_check(result: EstimatorResult | None) -> list[Check]:
    what = "estimator LatestExporter, local: ours / stock"
    if result is None:  # section skipped
        return []
    if result.error:
        return [Check.skipped("4", what, result.error, "≤ 1.05")]
    if not result.ratios:
        return [Check.skipped("4", what, f"ours not measured: {result.ours_how}", "≤ 1.05")]
    s = Summary.of(result.ratios)
    note = f"n={s.n} exports each, stock median {Summary.of(result.stock).median * 1000:.0f} ms"
    return [Check.compare("4", what, s.median, 1.05, spread=s.spread(), note=note)]


def memory_checks(results: list[MemoryResult], large: bool) -> list[Check]:
    checks = []
    for m in results:
        what = f"{m.backend}: memory growth, staged publish"
        if m.error:
            checks.append(Check.skipped("5", what, m.error.splitlines()[-1], "≤ 128 MiB"))
            continue
        size = f"{m.source_bytes / MiB:.0f} MiB export, largest file {m.largest_file / MiB:.0f} MiB"
        note = size if large else f"{size}; 2 GiB export: run --large"
        checks.append(
            Check.compare("5", what, m.growth / MiB, 128, digits=0, unit=" MiB", note=note)
        )
    return checks


def request_checks(results: list[RequestResults]) -> list[Check]:
    checks = []
    for r in results:
        staged = r.publish.get("staged")
        if staged:
            http, f = staged["http"], r.publish_files
            objects = http.mutating - http.multipart_extra
            note = (
                f"F={f}; {http.mutating} HTTP incl. {http.multipart_extra} multipart part/complete"
            )
            if staged["fsspec"]:
                note += f"; {staged['fsspec']['mutating']} mutating fsspec calls"
            if r.backend == "gcs" and http.deletes > 1:
                # gcsfs sends one DELETE per object to an emulator, batches of <= 100 to GCS.
                measured = objects
                objects = objects - http.deletes + math.ceil(http.deletes / GCS_BATCH)
                note = (
                    f"projected for GCS: the emulator got {http.deletes} single DELETEs "
                    f"(measured {measured}), gcsfs sends GCS batches of {GCS_BATCH}; " + note
                )
            checks.append(
                Check.compare(
                    "6",
                    f"{r.backend}: staged publish, mutating requests per object",
                    objects,
                    2 * f + 6,
                    digits=0,
                    note=note,
                    limit=f"≤ 2F+6 = {2 * f + 6}",
                )
            )
        if r.latest is not None:
            e, f = r.base_exports, r.base_objects_per_export
            bound = math.ceil(e * f / 1000) + 2
            checks.append(
                Check.compare(
                    "6",
                    f"{r.backend}: latest of E={e} exports, list requests",
                    r.latest.lists,
                    bound,
                    digits=0,
                    note=f"F={f} objects per export incl. marker",
                    limit=f"≤ ceil(E·F/1000)+2 = {bound}",
                )
            )
            checks.append(
                Check.compare(
                    "6",
                    f"{r.backend}: latest, marker reads + HEADs",
                    r.latest.reads + r.latest.infos,
                    1,
                    digits=0,
                    note=f"{r.latest.reads} GET, {r.latest.infos} HEAD/info",
                    limit="≤ 1 GET, 0 HEAD",
                )
            )
        if r.prune is not None:
            d, f = r.pruned, r.base_objects_per_export
            bound = math.ceil(d * f / 1000) + 2
            what = f"{r.backend}: prune of D={d} exports, delete requests"
            note = f"{r.prune.detail()}"
            if r.backend == "s3":
                checks.append(
                    Check.compare(
                        "6",
                        what,
                        r.prune.deletes,
                        bound,
                        digits=0,
                        note=note,
                        limit=f"≤ ceil(D·F/1000)+2 = {bound}",
                    )
                )
            else:
                checks.append(
                    Check(
                        "6",
                        what,
                        str(r.prune.deletes),
                        "",
                        "S3 only",
                        "info",
                        "the emulator has no batch endpoint: one request per object; " + note,
                    )
                )
    return checks


def startup_checks(imports: ImportResult | None, requests: list[RequestResults]) -> list[Check]:
    checks = []
    if imports is not None and imports.seconds:
        s = Summary.of([v * 1000 for v in imports.seconds])
        tf_loaded = "tensorflow" in imports.loaded
        loaded = ", ".join(imports.loaded) or "none of tensorflow/keras/s3fs/gcsfs/botocore/numpy"
        check = Check.compare(
            "7",
            "import cloud_exporter",
            s.median,
            150,
            digits=0,
            unit=" ms",
            spread=s.spread(0, " ms"),
            note=f"heavy modules loaded: {loaded}",
        )
        if tf_loaded:
            check.status, check.note = "MISS", "imports TensorFlow; " + check.note
        checks.append(check)
    for r in requests:
        what = f"{r.backend}: `cloud-exporter list`, {r.list_exports} exports"
        if r.cli_error:
            checks.append(Check.skipped("7", what, r.cli_error, "≤ 2 s"))
        elif r.cli_seconds:
            s = Summary.of(r.cli_seconds)
            note = (
                f"in-process list_exports {r.list_inprocess_seconds:.2f} s, "
                f"{r.list_inprocess.total if r.list_inprocess else 0} requests"
            )
            check = Check.compare(
                "7", what, s.median, 2.0, unit=" s", spread=s.spread(unit=" s"), note=note
            )
            if r.backend != "s3":
                check.status = "info (" + check.status + ")"  # the target names the moto server
            checks.append(check)
    return checks


def all_checks(run: RunResults) -> list[Check]:
    checks = ratio_checks(run.timings) + estimator_check(run.estimator)
    checks += memory_checks(run.memory, run.profile == "large")
    checks += request_checks(run.requests) + startup_checks(run.imports, run.requests)
    from .many_bench import many_checks  # many_bench renders into the report: import late

    checks += many_checks(run.many)
    return sorted(checks, key=lambda c: c.target)  # stable: keeps backend order within a target
