"""Asynchronous publishing: :func:`publish_async` runs :func:`cloud_exporter.publish` in the
background and returns a :class:`concurrent.futures.Future` of its ``ExportInfo``.

Per base (in this process) a lane starts publishes in submission order and runs at most
``max_in_flight`` of them at once (default 1: a new publish waits for the previous one). A
publish picks its version when it claims it, and a lane lets a publish claim only after the one
submitted before it has claimed (or finished), so versions follow submission order.

A failure is never silent: it is raised by ``.result()``, by the next ``publish_async`` to the
same base (as :class:`~cloud_exporter.errors.PublishFailedError`, the original as ``__cause__``,
unless ``.result()``/``.exception()`` already reported it) and logged at interpreter exit. At
exit a hook waits for unfinished publishes up to :func:`set_exit_timeout` seconds (default 300,
or ``$CLOUD_EXPORTER_EXIT_TIMEOUT``) and logs each one it could not finish.

Workers are daemon threads, ``max_in_flight`` at most per base; each publish keeps the upload
bounds of its own ``Storage``, so N queued publishes cost N small records, not N uploads.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgumentError, PublishFailedError
from .marker import ExportInfo
from .publishing import publish
from .storage import resolve

__all__ = [
    "EXIT_TIMEOUT_ENV",
    "PublishFuture",
    "publish_async",
    "set_exit_timeout",
    "wait_all",
]

log = logging.getLogger(__name__)

EXIT_TIMEOUT_ENV = "CLOUD_EXPORTER_EXIT_TIMEOUT"
DEFAULT_EXIT_TIMEOUT = 300.0
OnDone = Callable[[ExportInfo | None, BaseException | None], None]

_LOCK = threading.Lock()
_LANES: dict[str, _Lane] = {}
_THREAD_IDS = itertools.count(1)
_exit_timeout: float | None = None


class PublishFuture(Future):  # type: ignore[type-arg]
    """The future of one asynchronous publish; ``source_dir`` and ``base`` say which."""

    def __init__(self, source_dir: str, base: str) -> None:
        super().__init__()
        self.source_dir = source_dir
        self.base = base
        self._reported = False  # result()/exception() handed the outcome to the caller

    def result(self, timeout: float | None = None) -> ExportInfo:
        try:
            return super().result(timeout)
        finally:
            self._reported = self._reported or self.done()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        finally:
            self._reported = self._reported or self.done()

    def _failure(self) -> BaseException | None:
        """The error of a finished publish, without counting as reported."""
        if not self.done() or self.cancelled():
            return None
        return Future.exception(self, 0)


@dataclass
class _Job:
    future: PublishFuture
    options: dict[str, Any]
    on_done: OnDone | None
    claimed: threading.Event = field(default_factory=threading.Event)
    running: bool = False


@dataclass
class _Lane:
    uri: str
    limit: int = 1
    queue: deque[_Job] = field(default_factory=deque)
    jobs: list[_Job] = field(default_factory=list)  # unfinished, or failed and not reported
    workers: int = 0
    last_claim: threading.Event | None = None  # of the job started most recently


def publish_async(
    source_dir: str | os.PathLike[str],
    base: str,
    *,
    max_in_flight: int = 1,
    **options: Any,
) -> PublishFuture:
    """Queue ``publish(source_dir, base, **options)``; return the future of its ``ExportInfo``.

    Do not change or delete ``source_dir`` until the future is done: the files are read while
    they upload. Raises :class:`PublishFailedError` (and queues nothing) if an earlier
    asynchronous publish to ``base`` failed and no ``.result()``/``.exception()`` reported it.
    """
    return submit(source_dir, base, max_in_flight=max_in_flight, options=options)


def submit(
    source_dir: str | os.PathLike[str],
    base: str,
    *,
    max_in_flight: int = 1,
    options: dict[str, Any],
    on_done: OnDone | None = None,
) -> PublishFuture:
    """``publish_async`` for the adapters: ``on_done(info, error)`` runs in the worker after the
    publish and before the future resolves (to remove a temporary source, prune...)."""
    if not isinstance(max_in_flight, int) or isinstance(max_in_flight, bool) or max_in_flight < 1:
        raise InvalidArgumentError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
    if (
        "progress" in options
        and options["progress"] is not None
        and not callable(options["progress"])
    ):
        raise InvalidArgumentError("progress must be callable")
    fs, root = resolve(base, options.get("filesystem"), options.get("storage_options"))
    uri = fs.unstrip_protocol(root)
    source = os.fspath(source_dir)
    with _LOCK:
        lane = _LANES.setdefault(uri, _Lane(uri))
        failed = [j for j in lane.jobs if j.future._failure() is not None]
        lane.jobs = [j for j in lane.jobs if not j.future.done()]
        unreported = [j for j in failed if not j.future._reported]
        for job in unreported:
            job.future._reported = True
        if unreported:
            first = unreported[0].future
            raise PublishFailedError(
                f"an earlier asynchronous publish of {first.source_dir} to {uri} failed "
                f"({len(unreported)} unreported failure(s); first: {first._failure()!r}); "
                f"nothing of it was committed and {source} was not queued: fix the cause "
                "and submit again"
            ) from first._failure()
        job = _Job(PublishFuture(source, str(base)), dict(options, base=base), on_done)
        lane.limit = max_in_flight
        lane.queue.append(job)
        lane.jobs.append(job)
        if lane.workers < lane.limit:
            lane.workers += 1
            name = f"cloud-exporter-publish-{next(_THREAD_IDS)}"
            threading.Thread(target=_work, args=(lane,), name=name, daemon=True).start()
    return job.future


def _work(lane: _Lane) -> None:
    """A lane worker: run queued jobs in order until the queue is empty."""
    while True:
        with _LOCK:
            if not lane.queue or lane.workers > lane.limit:
                lane.workers -= 1
                return
            job = lane.queue.popleft()
            previous, lane.last_claim = lane.last_claim, job.claimed
        _run(job, previous)


def _run(job: _Job, previous: threading.Event | None) -> None:
    if not job.future.set_running_or_notify_cancel():
        job.claimed.set()
        return
    job.running = True
    options = dict(job.options)
    base = options.pop("base")
    user_progress = options.pop("progress", None)

    def progress(nbytes: int) -> None:
        job.claimed.set()  # a file is transferred only into a claimed version
        if user_progress is not None:
            user_progress(nbytes)

    info: ExportInfo | None = None
    error: BaseException | None = None
    try:
        if previous is not None:
            previous.wait()
        info = publish(job.future.source_dir, base, progress=progress, **options)
    except BaseException as exc:  # handed to the future; the worker carries on
        error = exc
    finally:
        job.claimed.set()
    if job.on_done is not None:
        try:
            job.on_done(info, error)
        except Exception:
            log.exception("cleanup after the publish of %s failed", job.future.source_dir)
    if error is None:
        job.future.set_result(info)
    else:
        log.debug("asynchronous publish of %s failed: %r", job.future.source_dir, error)
        job.future.set_exception(error)


def wait_all(timeout: float | None = None) -> list[PublishFuture]:
    """Wait until every asynchronous publish of this process is done, at most ``timeout``
    seconds; return the futures still unfinished (empty when all are done)."""
    with _LOCK:
        futures = [j.future for lane in _LANES.values() for j in lane.jobs]
    wait(futures, timeout)
    return [f for f in futures if not f.done()]


def set_exit_timeout(seconds: float | None) -> None:
    """How long the exit hook waits for unfinished publishes (None: ``$CLOUD_EXPORTER_EXIT_TIMEOUT``
    or 300 s). 0 waits not at all (every unfinished publish is logged as lost)."""
    global _exit_timeout
    if seconds is not None and (
        not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds >= 0
    ):
        raise InvalidArgumentError(f"exit timeout must be a number >= 0, got {seconds!r}")
    _exit_timeout = None if seconds is None else float(seconds)


def exit_timeout() -> float:
    """The exit hook's wait bound in seconds (see :func:`set_exit_timeout`)."""
    if _exit_timeout is not None:
        return _exit_timeout
    raw = os.environ.get(EXIT_TIMEOUT_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
            if value >= 0:
                return value
        except ValueError:
            pass
        log.warning(
            "%s=%r is not a number >= 0; using %g s", EXIT_TIMEOUT_ENV, raw, DEFAULT_EXIT_TIMEOUT
        )
    return DEFAULT_EXIT_TIMEOUT


def _at_exit() -> None:
    """Wait (bounded) for unfinished publishes; log every failure nobody saw and every loss."""
    with _LOCK:
        pending = [j for lane in _LANES.values() for j in lane.jobs if not j.future.done()]
    timeout = exit_timeout()
    if pending:
        log.warning(
            "waiting up to %g s for %d unfinished asynchronous publish(es)", timeout, len(pending)
        )
        wait_all(timeout)
    with _LOCK:
        jobs = [j for lane in _LANES.values() for j in lane.jobs]
    for job in jobs:
        future = job.future
        if not future.done():
            state = "uploading" if job.running else "queued, not started"
            log.error(
                "exit: the publish of %s to %s did not finish within %g s (%s) and is NOT "
                "committed; publish that directory again (set_exit_timeout or $%s waits longer)",
                future.source_dir,
                future.base,
                timeout,
                state,
                EXIT_TIMEOUT_ENV,
            )
        elif not future._reported and (error := future._failure()) is not None:
            log.error(
                "exit: the publish of %s to %s FAILED and is not committed: %r",
                future.source_dir,
                future.base,
                error,
            )


def _register_exit_hook() -> None:
    """Run ``_at_exit`` before ``concurrent.futures`` refuses new work at shutdown.

    That module stops its executors (which s3fs/gcsfs and Storage need) in a threading exit
    callback, which runs before ``atexit`` hooks; ours is registered after it (so it runs
    first). Falls back to ``atexit`` where that private hook does not exist.
    """
    import concurrent.futures.thread  # noqa: F401  (registers its exit callback first)

    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(_at_exit)
    else:
        register(_at_exit)


_register_exit_hook()
