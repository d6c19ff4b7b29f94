"""Keras 3 (TensorFlow backend): publish a model, or publish during ``fit`` with a callback.

``publish_model`` writes the SavedModel to a local temporary directory (``model.export`` for a
Keras model, ``tf.saved_model.save`` for a ``tf.Module``) and publishes it with
:func:`cloud_exporter.publish`. ``ExportCallback`` does that during ``fit``.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf

from . import asynchronous
from .errors import InvalidArgumentError, PublishFailedError, StorageError
from .exports import list_exports
from .marker import ExportInfo, check_metadata
from .policies import best_by_metric, check_keep
from .publishing import MODES, publish
from .retention import prune
from .retry import DEFAULT_RETRY, RetryPolicy
from .training import (
    TaskRole,
    local_export_dir,
    merged_metadata,
    numeric_metrics,
    resolve_role,
    role_from_tf_config,
)

__all__ = ["ExportCallback", "publish_model"]

log = logging.getLogger(__name__)


def publish_model(
    model: Any,
    base: str,
    *,
    export_kwargs: Mapping[str, Any] | None = None,
    temp_dir: str | None = None,
    asynchronous: bool = False,
    **publish_kwargs: Any,
) -> Any:
    """Export ``model`` (a Keras model or a ``tf.Module``) locally, then publish it to ``base``.

    ``export_kwargs`` go to ``model.export`` (e.g. ``input_signature``) or to
    ``tf.saved_model.save`` (e.g. ``signatures``); ``publish_kwargs`` to
    :func:`cloud_exporter.publish` (``version``, ``metadata``, ``keep``, ``storage_options``...).
    Returns the ``ExportInfo``; with ``asynchronous=True`` the local export is still written
    before returning, but the upload runs in the background and a ``Future[ExportInfo]`` is
    returned (see :func:`cloud_exporter.publish_async`; ``max_in_flight`` is accepted too).
    """
    if asynchronous:
        return _publish_model_async(model, base, export_kwargs, temp_dir, publish_kwargs)
    with local_export_dir(temp_dir) as tmp:
        save_model(model, tmp, export_kwargs)
        return publish(tmp, base, **publish_kwargs)


def _publish_model_async(
    model: Any,
    base: str,
    export_kwargs: Mapping[str, Any] | None,
    temp_dir: str | None,
    publish_kwargs: dict[str, Any],
    on_done: asynchronous.OnDone | None = None,
) -> asynchronous.PublishFuture:
    """Write the SavedModel to a temporary directory we own; publish it in the background and
    remove the directory once the publish is done (before its future resolves)."""
    tmp = tempfile.mkdtemp(prefix="cloud-exporter-", dir=temp_dir)
    max_in_flight = publish_kwargs.pop("max_in_flight", 1)

    def done(info: ExportInfo | None, error: BaseException | None) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        if on_done is not None:
            on_done(info, error)

    try:
        save_model(model, tmp, export_kwargs)
        return asynchronous.submit(
            tmp, base, max_in_flight=max_in_flight, options=publish_kwargs, on_done=done
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model(model: Any, path: str, export_kwargs: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` as a SavedModel to the local directory ``path``."""
    kwargs = dict(export_kwargs or {})
    if isinstance(model, keras.Model):
        kwargs.setdefault("verbose", False)
        model.export(path, format="tf_saved_model", **kwargs)
    elif isinstance(model, tf.Module):
        tf.saved_model.save(model, path, **kwargs)
    else:
        raise InvalidArgumentError(
            f"cannot export {type(model).__name__}: pass a keras.Model or a tf.Module"
        )


class ExportCallback(keras.callbacks.Callback):
    """Publishes the model during ``fit`` and when training ends; prunes to ``keep``.

    Without ``monitor``: publishes every ``every_n_epochs`` epochs. With ``monitor`` (a key of the
    epoch logs such as ``"val_loss"``): checks every ``every_n_epochs`` epochs and publishes only
    when the value improves on the best published one (``mode`` ``"min"`` or ``"max"``); the best
    is read back from the markers at the start of ``fit``, so a restarted job keeps comparing
    against the true best. ``on_train_end`` publishes the last epoch if the cadence skipped it (and,
    with ``monitor``, if it improves). The epoch, its metrics and the monitored value go into the
    marker metadata. Only the chief publishes (``TF_CONFIG``, or ``is_chief=``); other workers
    write nothing remote.

    With ``asynchronous=True`` training waits only for the local ``model.export``; the upload
    (and the prune after it) runs in the background, one at a time, in order. A failed upload is
    raised at the next export or by ``on_train_end``, which waits for every export to commit.
    """

    def __init__(
        self,
        base: str,
        every_n_epochs: int = 1,
        monitor: str | None = None,
        mode: str = "min",
        keep: int | None = 5,
        *,
        min_delta: float = 0.0,
        publish_mode: str = "staged",
        metadata: dict[str, Any] | None = None,
        export_kwargs: Mapping[str, Any] | None = None,
        filesystem: Any = None,
        storage_options: dict[str, Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        temp_dir: str | None = None,
        is_chief: bool | None = None,
        asynchronous: bool = False,
    ) -> None:
        super().__init__()
        _check_args(base, every_n_epochs, monitor, mode, keep, min_delta)
        if publish_mode not in MODES:
            raise InvalidArgumentError(f"publish_mode must be one of {MODES}, got {publish_mode!r}")
        self.base = base
        self.every_n_epochs = every_n_epochs
        self.monitor = monitor
        self.mode = mode
        self.keep = keep
        self.min_delta = float(min_delta)
        self.metadata = check_metadata(metadata)
        self.export_kwargs = export_kwargs
        self.temp_dir = temp_dir
        self.is_chief = is_chief
        self._storage = {
            "filesystem": filesystem,
            "storage_options": storage_options,
            "retry": retry,
        }
        self._publish_mode = publish_mode
        self.asynchronous = bool(asynchronous)
        self._pending: list[asynchronous.PublishFuture] = []  # asynchronous exports not yet awaited
        self.published: list[ExportInfo] = []  # what this callback published, in order
        self.best: float | None = None
        self._role = TaskRole()
        self._last: tuple[int, dict[str, Any]] | None = None  # (epoch, logs) not yet published

    # -- Keras hooks ---------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._role = resolve_role(self.is_chief, role_from_tf_config())
        self._last = None
        if self._role.publishes and self.monitor is not None:
            self.best = self._stored_best()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._last = (epoch, dict(logs or {}))
        if (epoch + 1) % self.every_n_epochs == 0:
            self._consider(epoch, self._last[1])

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._last is not None:
            self._consider(*self._last)
        self.wait()

    def wait(self) -> None:
        """Wait for every asynchronous export; raise if any failed (after all are done)."""
        pending, self._pending = self._pending, []
        errors = [e for f in pending if (e := f.exception()) is not None]
        if errors:
            raise PublishFailedError(
                f"{len(errors)} of {len(pending)} asynchronous exports to {self.base} failed "
                f"and were not committed; first: {errors[0]!r}"
            ) from errors[0]

    # -- decisions -----------------------------------------------------------------------------
    def _consider(self, epoch: int, logs: dict[str, Any]) -> None:
        """Publish this epoch's model if the rules say so; mark the epoch as handled."""
        self._last = None
        if not self._role.publishes:
            log.debug("%s does not publish (only the chief does)", self._role.describe())
            return
        value = None
        if self.monitor is not None:
            value = numeric_metrics(logs).get(self.monitor)
            if value is None:
                log.warning(
                    "monitor %r is not in the logs of epoch %d (%s); no export",
                    self.monitor,
                    epoch + 1,
                    sorted(logs),
                )
                return
            if not self._improves(value):
                log.info(
                    "epoch %d: %s=%g does not improve on %g; no export",
                    epoch + 1,
                    self.monitor,
                    value,
                    self.best,
                )
                return
        self._publish(epoch, logs)
        if value is not None:
            self.best = value

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _stored_best(self) -> float | None:
        exports = list_exports(self.base, **self._storage)
        ranked = best_by_metric(exports, self.monitor, self.mode)  # type: ignore[arg-type]
        return ranked[0][0] if ranked else None

    # -- side effects ----------------------------------------------------------------------------
    def _publish(self, epoch: int, logs: dict[str, Any]) -> None:
        ours: dict[str, Any] = {
            "epoch": epoch + 1,
            "metrics": numeric_metrics(logs),
            "task": self._role.describe(),
        }
        if self.monitor is not None:
            ours["monitor"] = {"name": self.monitor, "mode": self.mode}
        options = {"metadata": merged_metadata(self.metadata, ours), "mode": self._publish_mode}
        if self.asynchronous:
            self._pending = [f for f in self._pending if not f.done() or f._failure()]
            future = _publish_model_async(
                self.model,
                self.base,
                self.export_kwargs,
                self.temp_dir,
                {**options, **self._storage},
                on_done=self._after(epoch),
            )
            self._pending.append(future)
            return
        info = publish_model(
            self.model,
            self.base,
            export_kwargs=self.export_kwargs,
            temp_dir=self.temp_dir,
            **options,
            **self._storage,
        )
        self._after(epoch)(info, None)

    def _after(self, epoch: int) -> Callable[[ExportInfo | None, BaseException | None], None]:
        def committed(info: ExportInfo | None, error: BaseException | None) -> None:
            if info is None:
                return
            self.published.append(info)
            log.info("epoch %d published as %s", epoch + 1, info.uri)
            if self.keep is not None:
                self._prune(info)

        return committed

    def _prune(self, committed: ExportInfo) -> None:
        keep_best = None if self.monitor is None else (self.monitor, self.mode, 1)
        try:
            prune(
                self.base, keep=self.keep, keep_best=keep_best, committed=committed, **self._storage
            )
        except StorageError as exc:
            log.error(
                "published, but pruning %s failed (%s); retried after the next export",
                self.base,
                exc,
            )


def _check_args(
    base: object, every: object, monitor: object, mode: object, keep: object, min_delta: object
) -> None:
    if not isinstance(base, str) or not base.strip():
        raise InvalidArgumentError(f"base must be a non-empty URI or path, got {base!r}")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise InvalidArgumentError(f"every_n_epochs must be an int >= 1, got {every!r}")
    if monitor is not None and (not isinstance(monitor, str) or not monitor):
        raise InvalidArgumentError(f"monitor must be a metric name or None, got {monitor!r}")
    if mode not in ("min", "max"):
        raise InvalidArgumentError(f"mode must be 'min' or 'max', got {mode!r}")
    check_keep(keep)
    if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
        raise InvalidArgumentError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
