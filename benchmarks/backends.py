"""The three stores of a run: the moto S3 server, fake-gcs-server and local disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .counting import HttpCounter
from .env import servers

BACKENDS = ("s3", "gcs", "local")
BUCKET = "cloud-exporter-bench"


@dataclass
class Store:
    """One store, a filesystem instance on it with a request counter, and a run prefix."""

    name: str  # "s3", "gcs" or "local"
    protocol: str  # fsspec protocol
    root: str  # run prefix without protocol: "bucket/run-xyz" or an absolute local path
    storage_options: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    fs: Any = None
    counter: HttpCounter = field(default_factory=HttpCounter)

    def __post_init__(self) -> None:
        self.fs = self.new_fs()
        self.counter.attach(self.fs)

    def new_fs(self) -> Any:
        import fsspec

        return fsspec.filesystem(self.protocol, skip_instance_cache=True, **self.storage_options)

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    def path(self, *parts: str) -> str:
        """A path below the run prefix, as fs methods take it."""
        return "/".join([self.root.rstrip("/"), *(p.strip("/") for p in parts)])

    def uri(self, *parts: str) -> str:
        """The same path with its scheme, as cloud_exporter users pass it."""
        path = self.path(*parts)
        return path if self.is_local else f"{self.protocol}://{path}"

    def clear(self, *parts: str) -> None:
        """Delete everything below a path (not timed; frees the server's memory)."""
        path = self.path(*parts)
        if self.is_local:
            shutil.rmtree(path, ignore_errors=True)
            return
        self.fs.invalidate_cache()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        self.fs.invalidate_cache()

    def count_objects(self, *parts: str) -> int:
        path = self.path(*parts)
        self.fs.invalidate_cache()
        try:
            return len(self.fs.find(path))
        except FileNotFoundError:
            return 0

    def cli_options(self) -> list[str]:
        """``-o KEY=VALUE`` arguments that make the CLI reach this store."""
        if self.name == "s3":
            return ["-o", f"client_kwargs.endpoint_url={self.endpoint}"]
        if self.name == "gcs":
            return ["-o", f"endpoint_url={self.endpoint}", "-o", "token=anon", "-o", "project=test"]
        return []


@contextlib.contextmanager
def open_store(name: str, workdir: str) -> Iterator[Store]:
    """Start the server of ``name`` (if any), create the bucket, yield a Store; stop after."""
    run = f"run-{uuid.uuid4().hex[:8]}"
    if name == "local":
        root = os.path.join(workdir, "local-store", run)
        os.makedirs(root, exist_ok=True)
        try:
            yield Store("local", "file", root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    helpers = servers()
    if name == "s3":
        start, options_for, protocol = helpers.moto_server, helpers.s3_storage_options, "s3"
    elif name == "gcs":
        start, options_for, protocol = helpers.fake_gcs_server, helpers.gcs_storage_options, "gcs"
    else:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    with start() as url:
        options = options_for(url)
        helpers.create_bucket(protocol, options, BUCKET)
        yield Store(name, protocol, f"{BUCKET}/{run}", options, url)
