"""Drop-in replacements for ``tf.estimator``'s LatestExporter, BestExporter and FinalExporter.

Same constructor arguments, ``name`` and ``export()`` contract as the stock classes, so that
``tf.estimator.EvalSpec(exporters=[...])`` accepts them. Each export is written by the estimator
to a local temporary directory, then published atomically with :func:`cloud_exporter.publish`
(to ``<model_dir>/export/<name>`` or to ``export_base=``, e.g. ``s3://`` or ``gs://``) and
pruned with :func:`cloud_exporter.prune`. Needs TensorFlow 2.15 with tensorflow-estimator.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, Unpack

try:
    import tensorflow as tf

    _StockExporter = tf.estimator.Exporter
except (ImportError, AttributeError) as _exc:  # TF >= 2.16 has no tf.estimator
    raise ImportError(
        "cloud_exporter.estimator needs TensorFlow 2.15 with tensorflow-estimator (tf.estimator "
        "was removed in TF 2.16): pip install tensorflow-cpu==2.15.1 tensorflow-estimator==2.15.0 "
        "'cloud-exporter[gcs,s3,estimator]'; with Keras 3 use cloud_exporter.keras"
    ) from _exc

from . import asynchronous
from ._inplace import local_storage, publish_written
from ._stock_compat import (
    CompareFn,
    check_compare_fn,
    check_exports_to_keep,
    collect_stock_exports,
    fetch_assets,
    loss_smaller,
    returned_location,
)
from .errors import InvalidArgumentError, StorageError
from .exports import list_exports
from .marker import ExportInfo, check_metadata
from .policies import build_policies
from .publishing import MODES, publish
from .retention import prune_in
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import Storage, resolve
from .training import (
    TaskRole,
    global_step,
    local_export_dir,
    merged_metadata,
    numeric_metrics,
    resolve_role,
    role_from_run_config,
)

__all__ = ["BestExporter", "FinalExporter", "LatestExporter"]

log = logging.getLogger(__name__)


class ExporterOptions(TypedDict, total=False):
    """Keyword-only extras every exporter accepts beyond the stock arguments."""

    export_base: str | None  # publish here instead of <model_dir>/export/<name> (gs://, s3://)
    mode: str  # "staged" (default) or "direct", as publish()
    filesystem: Any  # an fsspec filesystem instance ...
    storage_options: dict[str, Any] | None  # ... or the options to build one from the URI
    retry: RetryPolicy  # retry bounds for every storage call
    metadata: dict[str, Any] | None  # extra JSON stored in every marker
    temp_dir: str | None  # where the estimator writes before publishing (default: system temp)
    is_chief: bool | None  # override the TF_CONFIG / RunConfig decision of who publishes
    asynchronous: bool  # upload in the background (the final export, and the next, wait)


_DEFAULTS: ExporterOptions = {
    "export_base": None,
    "mode": "staged",
    "filesystem": None,
    "storage_options": None,
    "retry": DEFAULT_RETRY,
    "metadata": None,
    "temp_dir": None,
    "is_chief": None,
    "asynchronous": False,
}


class _PublishingExporter(_StockExporter):
    """Exports with the estimator to a local temp dir, then publishes (assets.extra included)."""

    def __init__(
        self,
        name: str,
        serving_input_receiver_fn: Callable[[], Any] | None,
        assets_extra: Mapping[str, str] | None,
        as_text: bool,
        given: ExporterOptions,
    ) -> None:
        unknown = set(given) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        options: dict[str, Any] = {**_DEFAULTS, **given}
        self._name = name
        self._serving_input_receiver_fn = serving_input_receiver_fn
        self._assets_extra = assets_extra
        self._as_text = as_text
        self._export_base = options.pop("export_base")
        self._is_chief = options.pop("is_chief")
        self._temp_dir = options.pop("temp_dir")
        self._asynchronous = bool(options.pop("asynchronous"))
        self._pending: asynchronous.PublishFuture | None = None
        self._metadata = check_metadata(options.pop("metadata"))
        self._storage = options  # filesystem, storage_options, retry (and mode for publish)
        if options["mode"] not in MODES:
            raise InvalidArgumentError(f"mode must be one of {MODES}, got {options['mode']!r}")
        if options["filesystem"] is not None and options["storage_options"]:
            raise InvalidArgumentError("pass either filesystem= or storage_options=, not both")
        if self._export_base is not None and (
            not isinstance(self._export_base, str) or not self._export_base.strip()
        ):
            raise InvalidArgumentError(
                f"export_base must be a non-empty URI, got {self._export_base!r}"
            )

    @property
    def name(self) -> str:
        return self._name

    def base_for(self, export_path: str | bytes) -> str:
        """Where exports go: ``export_base`` if given, else the stock ``export_path``."""
        if self._export_base is not None:
            return self._export_base
        return export_path.decode() if isinstance(export_path, bytes) else str(export_path)

    def _role(self, estimator: Any) -> TaskRole:
        config = getattr(estimator, "config", None)
        if isinstance(config, tf.estimator.RunConfig):
            detected = role_from_run_config(config)
        else:  # e.g. Mock(spec=Estimator) in unit tests
            log.debug(
                "%s: estimator.config is %s, not a RunConfig; acting as the single chief",
                self._name,
                type(config).__name__,
            )
            detected = TaskRole()
        return resolve_role(self._is_chief, detected)

    def _target(self, estimator: Any, export_path: str) -> tuple[str, TaskRole] | None:
        """(base, role) when this task publishes; None (logged) on the other workers."""
        self._wait_previous()
        role = self._role(estimator)
        if not role.publishes:
            log.info("%s: %s does not publish (only the chief does)", self._name, role.describe())
            return None
        return self.base_for(export_path), role

    def _publish(
        self,
        estimator: Any,
        base: str,
        checkpoint_path: str | None,
        eval_result: Mapping[str, Any] | None,
        is_the_final_export: bool,
        role: TaskRole,
    ) -> tuple[ExportInfo | None, Any]:
        """Export, publish; (what was published, what ``export_saved_model`` returned). With
        ``asynchronous`` the first is None until the final export, which waits for its commit."""
        metadata = merged_metadata(
            self._metadata,
            {
                "exporter": self._name,
                "exporter_class": type(self).__name__,
                "global_step": global_step(eval_result, checkpoint_path),
                "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path),
                "metrics": numeric_metrics(eval_result),
                "is_the_final_export": bool(is_the_final_export),
                "task": role.describe(),
            },
        )
        if self._asynchronous:
            final = bool(is_the_final_export)
            return self._publish_in_background(estimator, base, checkpoint_path, metadata, final)
        options = self._storage
        local = local_storage(
            base, options["filesystem"], options["storage_options"], options["retry"]
        )
        if local is not None:  # local disk: written inside the base, committed by a rename
            return publish_written(
                *local, lambda tmp: self._write_local(estimator, tmp, checkpoint_path), metadata
            )
        with local_export_dir(self._temp_dir) as tmp:  # elsewhere: uploaded from the temp dir
            source, written, assets = self._write_local(estimator, tmp, checkpoint_path)
            info = publish(source, base, assets_extra=assets, metadata=metadata, **self._storage)
        return info, written

    def _write_local(
        self, estimator: Any, tmp: str, checkpoint_path: str | None
    ) -> tuple[str, Any, Mapping[str, str] | None]:
        """(export dir, what ``export_saved_model`` returned, local assets_extra) under tmp."""
        written = estimator.export_saved_model(
            tmp,
            self._serving_input_receiver_fn,
            assets_extra=None,  # validated and uploaded by publish
            as_text=self._as_text,
            checkpoint_path=checkpoint_path,
        )
        source = written.decode() if isinstance(written, bytes) else str(written)
        return source, written, fetch_assets(self._assets_extra, tmp, self._storage["retry"])

    def _publish_in_background(
        self,
        estimator: Any,
        base: str,
        checkpoint_path: str | None,
        metadata: dict[str, Any],
        final: bool,
    ) -> tuple[ExportInfo | None, Any]:
        """``asynchronous=True``: write the export locally now and publish it in the background
        from a temp dir we own (removed when done). A final export waits for its commit; the
        next export waits for this one."""
        tmp = tempfile.mkdtemp(prefix="cloud-exporter-", dir=self._temp_dir)
        try:
            source, written, assets = self._write_local(estimator, tmp, checkpoint_path)
            options = {"assets_extra": assets, "metadata": metadata, **self._storage}
            self._pending = asynchronous.submit(
                source, base, options=options, on_done=lambda *_: shutil.rmtree(tmp, True)
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return (self._wait_previous() if final else None), written

    def _wait_previous(self) -> ExportInfo | None:
        """Wait for the pending asynchronous publish (raising its error); None if there is none."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def _options(self) -> dict[str, Any]:
        return {k: v for k, v in self._storage.items() if k != "mode"}

    def _retain(
        self,
        base: str,
        keep: int,
        exports_to_keep: int,
        pinned: Sequence[int] = (),
        committed: ExportInfo | None = None,
    ) -> None:
        """After a commit: prune ours to ``keep`` (plus ``pinned``), then drop the oldest
        complete stock exports beyond ``exports_to_keep``, both from the prune's one listing.
        ``committed``: the export just published. Storage failures are logged; the next export
        retries."""
        options = self._options()
        try:
            fs, root = resolve(base, options["filesystem"], options["storage_options"])
            storage = Storage(fs, options["retry"])
            policies = build_policies(keep, None, None, pinned)
            report, listing = prune_in(storage, root, policies, committed=committed)
        except StorageError as exc:
            log.error(
                "%s: exported, but pruning %s failed (%s); retried after the next export",
                self._name,
                base,
                exc,
            )
            return
        collect_stock_exports(storage, root, exports_to_keep, report.kept, self._name, listing)


class LatestExporter(_PublishingExporter):
    """Publishes every evaluated checkpoint and keeps the newest ``exports_to_keep``."""

    def __init__(
        self,
        name: str,
        serving_input_receiver_fn: Callable[[], Any],
        assets_extra: Mapping[str, str] | None = None,
        as_text: bool = False,
        exports_to_keep: int | None = 5,
        **options: Unpack[ExporterOptions],
    ) -> None:
        check_exports_to_keep(exports_to_keep)
        self._exports_to_keep = exports_to_keep
        super().__init__(
            name,
            serving_input_receiver_fn,
            assets_extra,
            as_text,
            options,
        )

    def export(
        self,
        estimator: Any,
        export_path: str,
        checkpoint_path: str | None,
        eval_result: Mapping[str, Any] | None,
        is_the_final_export: bool,
    ) -> str | bytes | None:
        target = self._target(estimator, export_path)
        if target is None:
            return None
        base, role = target
        info, written = self._publish(
            estimator, base, checkpoint_path, eval_result, is_the_final_export, role
        )
        if self._exports_to_keep is not None:
            keep = self._exports_to_keep
            self._retain(base, keep, keep, committed=info)
        return returned_location(base, info, written)


class FinalExporter(_PublishingExporter):
    """Publishes once, at the end of training (``is_the_final_export``); never prunes."""

    def __init__(
        self,
        name: str,
        serving_input_receiver_fn: Callable[[], Any],
        assets_extra: Mapping[str, str] | None = None,
        as_text: bool = False,
        **options: Unpack[ExporterOptions],
    ) -> None:
        super().__init__(
            name,
            serving_input_receiver_fn,
            assets_extra,
            as_text,
            options,
        )

    def export(
        self,
        estimator: Any,
        export_path: str,
        checkpoint_path: str | None,
        eval_result: Mapping[str, Any] | None,
        is_the_final_export: bool,
    ) -> str | bytes | None:
        if not is_the_final_export:
            return None
        target = self._target(estimator, export_path)
        if target is None:
            return None
        base, role = target
        info, written = self._publish(estimator, base, checkpoint_path, eval_result, True, role)
        return returned_location(base, info, written)


class BestExporter(_PublishingExporter):
    """Publishes a checkpoint only when ``compare_fn`` says it beats the best published one.

    The best is read back from the markers under the base (the eval metrics each export
    recorded), so a restarted job compares against the true best. ``event_file_pattern`` is
    accepted for compatibility and not used. Pruning keeps the ``exports_to_keep`` most recent
    best exports: the newest exports that each beat every export before them.
    """

    def __init__(
        self,
        name: str = "best_exporter",
        serving_input_receiver_fn: Callable[[], Any] | None = None,
        event_file_pattern: str | None = "eval/*.tfevents.*",
        compare_fn: CompareFn = loss_smaller,
        assets_extra: Mapping[str, str] | None = None,
        as_text: bool = False,
        exports_to_keep: int | None = 5,
        **options: Unpack[ExporterOptions],
    ) -> None:
        check_compare_fn(compare_fn)
        check_exports_to_keep(exports_to_keep)
        self._compare_fn = compare_fn
        del event_file_pattern  # accepted for compatibility with tf.estimator; never read
        self._exports_to_keep = exports_to_keep
        super().__init__(
            name,
            serving_input_receiver_fn,
            assets_extra,
            as_text,
            options,
        )

    def export(
        self,
        estimator: Any,
        export_path: str,
        checkpoint_path: str | None,
        eval_result: Mapping[str, Any] | None,
        is_the_final_export: bool,
    ) -> str | bytes | None:
        target = self._target(estimator, export_path)
        if target is None:
            return None
        base, role = target
        records = self.best_exports(base)
        if records and not self._compare_fn(
            best_eval_result=records[-1].metadata["metrics"], current_eval_result=eval_result
        ):
            log.info("%s: not better than version %d; no export", self._name, records[-1].version)
            return None
        info, written = self._publish(
            estimator, base, checkpoint_path, eval_result, is_the_final_export, role
        )
        if self._exports_to_keep is not None:
            previous = [r.version for r in records]
            keep_previous = previous[max(0, len(previous) - (self._exports_to_keep - 1)) :]
            pinned = [*keep_previous, *([info.version] if info else [])]
            self._retain(base, 1, self._exports_to_keep, pinned, committed=info)
        return returned_location(base, info, written)

    def best_exports(self, base: str) -> list[ExportInfo]:
        """The published exports that each beat all before them, oldest first (last = best)."""
        options = self._options()
        chain: list[ExportInfo] = []
        for info in list_exports(base, **options):
            metrics = info.metadata.get("metrics")
            if not isinstance(metrics, dict) or not metrics:
                continue
            try:
                better = not chain or self._compare_fn(
                    best_eval_result=chain[-1].metadata["metrics"], current_eval_result=metrics
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "%s: version %d is not comparable (%s); ignored", self._name, info.version, exc
                )
                continue
            if better:
                chain.append(info)
        return chain
