"""Names and paths of the on-storage layout: the single source of truth.

A base holds committed versions and one staging area::

    <base>/<version>/...                       a version directory (10-digit integer name)
    <base>/<version>/_cloud_exporter_commit.json  its marker: the commit record
    <base>/.cloud-exporter-staging/            everything in flight; TF Serving ignores it
        <version>.claim                        reserves <version> for one publisher
        <version>-<writer>/...                 files uploaded before the copy into place

The staging directory name is also used by the terraform lifecycle rules (terraform/), which
expire anything under ``<prefix>/.cloud-exporter-staging/`` left by crashed publishes.
"""

from __future__ import annotations

import posixpath
import re

STAGING_DIRNAME = ".cloud-exporter-staging"
MARKER_NAME = "_cloud_exporter_commit.json"
CLAIM_SUFFIX = ".claim"
SAVED_MODEL_NAMES = ("saved_model.pb", "saved_model.pbtxt")
ASSETS_EXTRA_DIRNAME = "assets.extra"
STOCK_TEMP_PREFIX = "temp-"

# TF Serving parses version names as int64; only canonical decimals name a version here, so
# "0042" (which TF Serving would read as 42, beside a real 42) is foreign, never merged with it.
MAX_VERSION = 2**63 - 1
_VERSION_NAME = re.compile(r"^(0|[1-9][0-9]{0,18})$")


def join(*parts: str) -> str:
    """Join storage path parts with '/', ignoring empty parts."""
    return posixpath.join(*[p for p in parts if p]) if any(parts) else ""


def parse_version(name: str) -> int | None:
    """The version a directory name denotes: a canonical decimal within int64, else None."""
    if _VERSION_NAME.match(name) and int(name) <= MAX_VERSION:
        return int(name)
    return None


def version_dir(base: str, version: int) -> str:
    return join(base, str(version))


def marker_path(base: str, version: int) -> str:
    return join(base, str(version), MARKER_NAME)


def staging_root(base: str) -> str:
    return join(base, STAGING_DIRNAME)


def claim_path(base: str, version: int) -> str:
    return join(base, STAGING_DIRNAME, f"{version}{CLAIM_SUFFIX}")


def staging_dir(base: str, version: int, writer_id: str) -> str:
    return join(base, STAGING_DIRNAME, f"{version}-{writer_id}")


def is_saved_model_file(relpath: str) -> bool:
    """True for the root SavedModel protobuf, which must be written last."""
    return relpath in SAVED_MODEL_NAMES
