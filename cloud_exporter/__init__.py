"""cloud_exporter: atomic SavedModel exports to GCS, S3 and local disk, with safe pruning.

Importing this package does not import TensorFlow; the adapters in ``cloud_exporter.estimator``
and ``cloud_exporter.keras`` do.
"""

from __future__ import annotations

from ._version import __version__
from .adopt import adopt_exports
from .asynchronous import publish_async
from .errors import (
    CloudExporterError,
    CorruptExportError,
    ExportNotFoundError,
    InvalidArgumentError,
    InvalidSourceError,
    LocationNotFoundError,
    PermissionDeniedError,
    PruneIncompleteError,
    PublishFailedError,
    StorageError,
    TransientStorageError,
    VersionConflictError,
)
from .exports import latest_export, list_exports, verify_export
from .marker import ExportInfo, FileRecord
from .policies import KeepBest, KeepEveryHours, KeepNewest, KeepPinned
from .publishing import publish
from .retention import PruneReport, prune
from .retry import RetryPolicy
from .sync import sync_exports

__all__ = [
    "CloudExporterError",
    "CorruptExportError",
    "ExportInfo",
    "ExportNotFoundError",
    "FileRecord",
    "InvalidArgumentError",
    "InvalidSourceError",
    "KeepBest",
    "KeepEveryHours",
    "KeepNewest",
    "KeepPinned",
    "LocationNotFoundError",
    "PermissionDeniedError",
    "PruneIncompleteError",
    "PruneReport",
    "PublishFailedError",
    "RetryPolicy",
    "StorageError",
    "TransientStorageError",
    "VersionConflictError",
    "__version__",
    "adopt_exports",
    "latest_export",
    "list_exports",
    "prune",
    "publish",
    "sync_exports",
    "publish_async",
    "verify_export",
]
