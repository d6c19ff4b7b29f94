"""What the estimator exporters do to behave like the stock tf.estimator ones.

* ``fetch_assets``: ``assets_extra`` sources may be local files, fsspec URLs (``s3://``,
  ``gs://``, ``memory://``) or anything ``tf.io.gfile`` reads (``ram://``, ``gs://`` natively in
  TF 2.15, ``hdfs://`` with libhdfs); each is copied byte for byte to a local file first.
* ``collect_stock_exports``: ``exports_to_keep`` also counts complete stock exports already in
  the base (10-digit directories without a marker) and deletes the oldest, as the stock GC does.

Importing this module does not import TensorFlow (``fetch_assets`` does, for gfile sources).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from ._unmarked import complete_stock_exports, delete_unmarked
from .errors import InvalidArgumentError, StorageError
from .exports import list_base
from .retry import DEFAULT_RETRY, RetryPolicy
from .storage import Storage, resolve

log = logging.getLogger(__name__)


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
    storage: Storage, base: str, keep: int, ours: Iterable[int], name: str
) -> list[int]:
    """Delete complete stock exports beyond the newest ``keep`` of stock + ``ours``.

    Never touches ``temp-*`` dirs, staging, incomplete directories or marked exports. Returns
    the versions deleted; a storage failure is logged (the next export retries).
    """
    try:
        listing = list_base(storage, base)
        stock = complete_stock_exports(listing)
        ranked = sorted({*stock, *ours}, reverse=True)
        doomed = [v for v in stock if v not in ranked[:keep]]
        deleted = [v for v in doomed if delete_unmarked(storage, base, v, listing.versions[v])]
    except StorageError as exc:
        log.error("%s: removing old stock exports under %s failed (%s)", name, base, exc)
        return []
    if deleted:
        log.info("%s: removed stock exports %s (exports_to_keep=%d)", name, deleted, keep)
    return deleted
