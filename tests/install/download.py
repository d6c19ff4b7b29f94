"""The install jobs' one helper: copy an export's objects to a local directory to load it."""

import os

import fsspec


def download(uri, options, dest):
    """Copy every object below ``uri`` into ``dest``; return ``dest``."""
    fs, root = fsspec.core.url_to_fs(uri, **options)
    for path in fs.find(root):
        target = os.path.join(dest, path[len(root) + 1 :])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as out:
            out.write(fs.cat_file(path))
    return dest
