"""Child process: how much the publishing process's memory grows during one publish.

Usage: python benchmarks/memprobe.py SPEC_JSON (run as a script, so that PYTHONPATH picks the
cloud_exporter under test). The spec names the protocol, storage options,
source tree, warm-up tree and base URI. A warm-up publish of a tiny tree loads every module and
opens the connection pool first; then RSS is sampled every 5 ms while the real publish runs.
Growth = max(sampled peak RSS, ru_maxrss if it rose) - RSS just before the publish. Prints JSON.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Sampler(threading.Thread):
    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_bytes())


def main(spec: dict) -> dict:
    import fsspec

    from cloud_exporter import publish

    if spec["protocol"] == "file":
        fs = fsspec.filesystem("file")
    else:
        fs = fsspec.filesystem(spec["protocol"], skip_instance_cache=True, **spec["options"])
    publish(spec["warm"], spec["warm_base"], filesystem=fs, mode=spec["mode"])
    gc.collect()
    before, maxrss_before = rss_bytes(), maxrss_bytes()
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    publish(spec["source"], spec["base"], filesystem=fs, mode=spec["mode"])
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    maxrss_after = maxrss_bytes()
    if maxrss_after > maxrss_before:
        peak = max(peak, maxrss_after)
    return {
        "rss_before": before,
        "peak": peak,
        "growth": peak - before,
        "maxrss_before": maxrss_before,
        "maxrss_after": maxrss_after,
        "seconds": seconds,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
