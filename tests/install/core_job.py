"""Run inside the core install venv (``pip install <wheel>``, no extras, no TensorFlow):
publish/list on local disk, and the one-line message each missing extra gives. Prints JSON.

argv: WORKDIR
"""

import json
import os
import sys

from cloud_exporter import CloudExporterError, list_exports, publish, verify_export


def message(call):
    try:
        call()
    except (CloudExporterError, ImportError) as exc:
        return str(exc)
    return None


def main(workdir):
    source = os.path.join(workdir, "model")
    os.makedirs(os.path.join(source, "variables"), exist_ok=True)
    files = {
        "saved_model.pb": b"graph",
        "variables/variables.index": b"index",
        "variables/variables.data-00000-of-00001": b"data",
    }
    for rel, data in files.items():
        with open(os.path.join(source, rel), "wb") as f:
            f.write(data)
    base = os.path.join(workdir, "exports")
    infos = [publish(source, base, keep=2) for _ in range(3)]
    listed = list_exports(base)
    verify_export(base, listed[-1].version, deep=True)

    def estimator():
        import cloud_exporter.estimator  # noqa: F401

    print(
        json.dumps(
            {
                "published": [i.version for i in infos],
                "listed": [e.version for e in listed],
                "s3": message(lambda: publish(source, "s3://bucket/models/x")),
                "gcs": message(lambda: publish(source, "gs://bucket/models/x")),
                "estimator": message(estimator),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
