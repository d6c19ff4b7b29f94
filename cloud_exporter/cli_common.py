"""What every ``cloud-exporter`` subcommand module shares: registering, options, output."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from .cli_format import Progress, nested, wants_progress

Run = Callable[[argparse.Namespace], int]


def add_command(
    sub: Any, common: argparse.ArgumentParser, name: str, run: Run, help: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` (with the global options of ``common``) that runs ``run(args)``."""
    p = sub.add_parser(name, parents=[common], help=help, **kwargs)
    p.set_defaults(run=run)
    return p


def add_base(p: argparse.ArgumentParser) -> None:
    """The positional export base every command on exports takes."""
    p.add_argument(
        "base",
        help="export base URI holding one directory per version (s3://b/m, gs://b/m, /local/dir)",
    )


def storage_options(pairs: list[str]) -> dict[str, Any] | None:
    """Parse KEY=VALUE options; values are JSON when they parse, dotted keys nest."""
    return nested(pairs, "-o") or None


@contextlib.contextmanager
def progress(
    args: argparse.Namespace, label: str, total: int | None, delay: float = 0.0
) -> Iterator[Progress | None]:
    """A Progress on a terminal (closed on exit), else None."""
    if not wants_progress(args.json):
        yield None
        return
    with Progress(label, total, delay=delay) as bar:
        yield bar


def emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    """Print ``doc`` as JSON with --json, else ``text``."""
    print(json.dumps(doc, indent=2, ensure_ascii=False) if args.json else text)
