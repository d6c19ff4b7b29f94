"""What the estimator exporters do to behave like the stock tf.estimator ones.

* ``fetch_assets``: ``assets_extra`` sources may be local files, fsspec URLs (``s3://``,
  ``gs://``, ``memory://``) or anything ``tf.io.gfile`` reads (``ram://``, ``gs://`` natively in
  TF 2.15, ``hdfs://`` with libhdfs); each is copied byte for byte to a local file first.
* the stock argument checks (``check_compare_fn``, ``check_exports_to_keep``), the default
  ``compare_fn`` (``loss_smaller``) and the stock return value (``returned_location``: bytes
  when the estimator returned bytes).
* ``collect_stock_exports``: ``exports_to_keep`` also counts complete stock exports already in
  the base (10-digit directories without a marker) and deletes the oldest, as the stock GC does.

Importing this module does not import TensorFlow (``fetch_assets`` does, for gfile sources).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._unmarked import complete_stock_exports, delete_unmarked
from .errors import InvalidArgumentError, StorageError
from .exports import BaseListing, list_base
from .marker import ExportInfo
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import Storage, resolve
from .training import export_location

log = logging.getLogger(__name__)
CompareFn = Callable[..., bool]


def fetch_assets(
    assets_extra: Mapping[str, Any] | None, into: str, retry: RetryPolicy = DEFAULT_RETRY
) -> Mapping[str, Any] | None:
    """``assets_extra`` with every URL source replaced by a local copy under ``into``."""
    if not isinstance(assets_extra, Mapping):
        return assets_extra  # None, or a wrong type that publish() reports
    local: dict[str, Any] = {}
    for i, (dest, src) in enumerate(assets_extra.items()):
        if isinstance(src, bytes):
            src = src.decode()
        if not isinstance(src, str) or "://" not in src or src.startswith("file://"):
            local[dest] = src.removeprefix("file://") if isinstance(src, str) else src
            continue
        target = os.path.join(into, f"asset-{i}")
        _copy_url(src, target, str(dest), retry)
        local[dest] = target
    return local


def _copy_url(src: str, target: str, dest: str, retry: RetryPolicy) -> None:
    try:
        fs, path = resolve(src)
    except InvalidArgumentError as exc:
        fsspec_problem = str(exc)
    else:
        with Storage(fs, retry).open_read(path) as f, open(target, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        return
    try:
        import tensorflow as tf

        tf.io.gfile.copy(src, target, overwrite=True)
    except Exception as exc:  # tf.errors.* (Unimplemented, NotFound, ...), ImportError
        scheme = src.split("://", 1)[0]
        raise InvalidArgumentError(
            f"assets_extra source {src!r} for {dest!r} cannot be read: fsspec has no usable "
            f"{scheme}:// backend ({fsspec_problem}) and tf.io.gfile failed "
            f"({type(exc).__name__}: {str(exc).strip()[:200]}); install the backend for "
            f"{scheme}:// (e.g. tensorflow-io, or libhdfs for hdfs://) or copy the file locally"
        ) from exc


def collect_stock_exports(
    storage: Storage,
    base: str,
    keep: int,
    ours: Iterable[int],
    name: str,
    listing: BaseListing | None = None,
) -> list[int]:
    """Delete complete stock exports beyond the newest ``keep`` of stock + ``ours``.

    Never touches ``temp-*`` dirs, staging, incomplete directories or marked exports. Returns
    the versions deleted; a storage failure is logged (the next export retries). ``listing``:
    one taken since the last commit (the prune's), instead of listing the base again.
    """
    try:
        listing = listing or list_base(storage, base)
        from .retention import staged_versions

        in_flight = staged_versions(listing)  # a direct publish's dir looks complete pre-marker
        stock = [v for v in complete_stock_exports(listing) if v not in in_flight]
        ranked = sorted({*stock, *ours}, reverse=True)
        doomed = [v for v in stock if v not in ranked[:keep]]
        deleted = [v for v in doomed if delete_unmarked(storage, base, v, listing.versions[v])]
    except StorageError as exc:
        log.error("%s: removing old stock exports under %s failed (%s)", name, base, exc)
        return []
    if deleted:
        log.info("%s: removed stock exports %s (exports_to_keep=%d)", name, deleted, keep)
    return deleted


def loss_smaller(
    best_eval_result: Mapping[str, Any], current_eval_result: Mapping[str, Any]
) -> bool:
    """True if ``current_eval_result['loss']`` is smaller (the stock BestExporter default)."""
    for label, result in (
        ("best_eval_result", best_eval_result),
        ("current_eval_result", current_eval_result),
    ):
        if not result or "loss" not in result:
            raise InvalidArgumentError(f"{label} cannot be empty or no loss is found in it.")
    return best_eval_result["loss"] > current_eval_result["loss"]


def check_compare_fn(compare_fn: CompareFn | None) -> None:
    """Raise InvalidArgumentError (a ValueError) unless ``compare_fn`` takes exactly
    best_eval_result and current_eval_result."""
    if compare_fn is None:
        raise InvalidArgumentError("`compare_fn` must not be None.")
    try:
        params = inspect.signature(compare_fn).parameters
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"compare_fn ({compare_fn}) has no inspectable signature"
        ) from exc
    wanted = {"best_eval_result", "current_eval_result"}
    missing = wanted - set(params)
    if missing:
        raise InvalidArgumentError(
            f"compare_fn ({compare_fn}) must include {sorted(missing)} argument(s)."
        )
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    extra = sorted(n for n, p in params.items() if p.kind in positional and n not in wanted)
    if extra:
        raise InvalidArgumentError(
            f"compare_fn ({compare_fn}) has following not expected args: {extra}"
        )


def check_exports_to_keep(exports_to_keep: object) -> None:
    if exports_to_keep is None:
        return
    if not isinstance(exports_to_keep, int) or isinstance(exports_to_keep, bool):
        raise InvalidArgumentError(
            f"`exports_to_keep` must be an int or None, got {exports_to_keep!r}"
        )
    if exports_to_keep <= 0:
        raise InvalidArgumentError(
            f"`exports_to_keep`, if provided, must be a positive number. Got {exports_to_keep}"
        )


def returned_location(base: str, info: ExportInfo | None, written: Any) -> str | bytes | None:
    """The published location, as bytes when the estimator returned bytes (as stock does);
    None while an asynchronous export is still uploading (its version is not known yet)."""
    if info is None:
        return None
    location = export_location(base, info)
    return location.encode() if isinstance(written, bytes) else location
