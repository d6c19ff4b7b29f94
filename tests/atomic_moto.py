"""moto's S3 server, with its conditional writes made atomic.

Stock moto (5.2) answers a PutObject or CompleteMultipartUpload that carries ``If-None-Match`` or
``If-Match`` by looking the key up and then storing, with no lock held between the two, on a
threaded server. Two creates racing for one key can therefore both succeed: in the test suite
that showed up as two publishers holding one version, the loser's abort deleting the winner's
files. Real S3 decides a conditional write atomically, and claims and markers rely on that, so
the test servers must too. This launcher serialises conditional writes on keys behind one lock
(they are only claims, markers and other small objects, so the lock costs nothing measurable)
and then runs moto's own server entry point with the remaining arguments.

Usage: ``python atomic_moto.py [--stock] [--ignore-if-none-match] [--race-window SECONDS]
<moto.server arguments>``

- ``--stock``: leave moto's conditional writes as they are;
- ``--ignore-if-none-match``: drop that header from every request, as some S3-compatible stores
  do (they accept it and overwrite anyway), for the test of the library's check for them;
- ``--race-window S``: sleep ``S`` seconds inside every object lookup, which widens moto's
  check-then-store window so that a race shows up at once (only for the test that proves the
  lock: it runs one server of each kind with a window and counts the winners).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

CONDITIONAL_HEADERS = ("If-None-Match", "If-Match")


def _patch_key_requests(atomic: bool, ignore_if_none_match: bool) -> None:
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    handle = S3Response._key_response

    def key_response(self: S3Response, request: Any, full_url: str) -> Any:
        if ignore_if_none_match:
            request.environ.pop("HTTP_IF_NONE_MATCH", None)  # request.headers reads the environ
        conditional = request.method in ("PUT", "POST") and any(
            request.headers.get(name) for name in CONDITIONAL_HEADERS
        )
        if not (atomic and conditional):
            return handle(self, request, full_url)
        with lock:
            return handle(self, request, full_url)

    S3Response._key_response = key_response  # type: ignore[method-assign]


def _widen_race_window(seconds: float) -> None:
    from moto.s3.models import S3Backend

    get_object = S3Backend.get_object

    def slow_get_object(self: S3Backend, *args: Any, **kwargs: Any) -> Any:
        found = get_object(self, *args, **kwargs)
        time.sleep(seconds)
        return found

    S3Backend.get_object = slow_get_object  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    if sys.path and sys.path[0] == str(Path(__file__).resolve().parent):
        del sys.path[0]  # this script's directory holds test modules, not moto's dependencies
    flags = {"--stock", "--ignore-if-none-match"}
    given, argv = flags.intersection(argv), [arg for arg in argv if arg not in flags]
    if "--race-window" in argv:
        at = argv.index("--race-window")
        _widen_race_window(float(argv[at + 1]))
        del argv[at : at + 2]
    _patch_key_requests("--stock" not in given, "--ignore-if-none-match" in given)

    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
