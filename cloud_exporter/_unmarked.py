"""Version directories without a marker: stock tf.estimator exports and copies made by other
tools. Used by the estimator exporters (stock-compatible garbage collection) and by ``adopt``.

A directory is a *complete* SavedModel when it holds a non-empty ``saved_model.pb`` (or
``.pbtxt``) and, if it has variables at all, ``variables/variables.index`` with every shard
``variables.data-NNNNN-of-MMMMM`` of one consistent set.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from .exports import BaseListing
from .layout import MARKER_NAME, SAVED_MODEL_NAMES, is_saved_model_file, join, marker_path
from .storage import Entry, Storage

log = logging.getLogger(__name__)

STOCK_NAME = re.compile(r"^[0-9]{10}$")  # what tf.estimator's export_saved_model names a dir
_INDEX = "variables/variables.index"
_SHARD = re.compile(r"^variables/variables\.data-([0-9]{5})-of-([0-9]{5})$")


def incomplete_reason(files: Mapping[str, Entry]) -> str | None:
    """Why the files of one version directory are not a complete SavedModel; None if they are."""
    roots = [name for name in SAVED_MODEL_NAMES if name in files]
    if not roots:
        return "no saved_model.pb or saved_model.pbtxt"
    if all(files[name].size == 0 for name in roots):
        return f"{roots[0]} is empty (an upload in flight?)"
    variables = [p for p in files if p.startswith("variables/")]
    if not variables:
        return None  # a SavedModel without variables (constants only) is valid
    if _INDEX not in files:
        return f"{_INDEX} is missing but variables/ holds {sorted(variables)[:3]}"
    shards = [m for m in map(_SHARD.match, variables) if m]
    totals = {int(m.group(2)) for m in shards}
    if not shards or len(totals) != 1:
        return "variables/ has no consistent variables.data-NNNNN-of-MMMMM set"
    total = totals.pop()
    present = {int(m.group(1)) for m in shards}
    missing = sorted(set(range(total)) - present)
    if missing or total == 0 or max(present) >= total:
        return f"variables data shard(s) {missing[:5]} of {total} missing"
    return None


def unmarked_versions(listing: BaseListing) -> dict[int, dict[str, Entry]]:
    """The listed version directories that have no marker, by version."""
    return {v: files for v, files in listing.versions.items() if MARKER_NAME not in files}


def complete_stock_exports(listing: BaseListing) -> list[int]:
    """Unmarked 10-digit directories that hold a complete SavedModel, ascending."""
    return sorted(
        v
        for v, files in unmarked_versions(listing).items()
        if STOCK_NAME.match(str(v)) and incomplete_reason(files) is None
    )


def delete_unmarked(storage: Storage, base: str, version: int, files: Mapping[str, Entry]) -> bool:
    """Delete one unmarked version directory, saved_model.pb first (TF Serving stops loading
    it), then the rest. False (nothing deleted) when a marker appeared meanwhile (adopted)."""
    if storage.read_bytes(marker_path(base, version), 0) is not None:
        log.info("version %d was adopted meanwhile; not deleted", version)
        return False
    directory = join(base, str(version))
    first = [join(directory, p) for p in files if is_saved_model_file(p)]
    storage.delete(first)
    storage.delete([join(directory, p) for p in files if not is_saved_model_file(p)])
    storage.remove_empty_dirs(directory)
    return True
