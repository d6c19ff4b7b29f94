"""The exception hierarchy: every error the library raises to its caller on purpose is a
CloudExporterError. Two exceptions: an unknown keyword argument to an estimator exporter is a
TypeError, as Python raises it; the ValueErrors of ``untrusted.load_json`` and of journal parsing
are caught where they arise. Argument errors are InvalidArgumentError, also a ValueError.
"""

from __future__ import annotations


class CloudExporterError(Exception):
    """Base class of every error cloud_exporter raises on purpose."""


class InvalidArgumentError(CloudExporterError, ValueError):
    """An argument is malformed (bad keep, version, metadata, URI scheme...)."""


class InvalidSourceError(InvalidArgumentError):
    """The directory to publish is missing, not a SavedModel, or unsafe (escaping symlink...)."""


class VersionConflictError(CloudExporterError):
    """The requested version is already committed or being published by another writer."""


class CorruptExportError(CloudExporterError):
    """A committed export does not match its marker, or its marker does not validate."""


class ExportNotFoundError(CloudExporterError, LookupError):
    """No committed export with that version exists under the base."""


class StorageError(CloudExporterError):
    """The storage backend failed and retrying did not (or could not) help."""


class TransientStorageError(StorageError):
    """A storage failure worth retrying; raised once the retry budget is spent."""


class PermissionDeniedError(StorageError, PermissionError):
    """The credentials lack a permission the operation needs."""


class LocationNotFoundError(StorageError):
    """The bucket (or local parent directory) of the base does not exist."""


class PublishFailedError(CloudExporterError):
    """An earlier asynchronous publish to the same base failed; the original is ``__cause__``."""


class PruneIncompleteError(StorageError):
    """A prune could not delete everything it meant to; running it again finishes the job."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class ChecksumMismatchError(StorageError):
    """Bytes did not match their checksum: the store rejected an upload whose bytes did not
    match the CRC32C it declared, or a copy reported a CRC32C other than the one expected."""
