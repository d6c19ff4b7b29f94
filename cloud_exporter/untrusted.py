"""Parsing JSON read from storage: anyone with write access to a bucket can plant it.

``load_json`` bounds the size and the nesting depth and turns every way such bytes can be
broken (truncated, not UTF-8, NaN, nested deeper than the parser's stack) into one ValueError,
so a planted object is a skipped or failed export, never a crash of the reader.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # markers nest 3 levels; user metadata gets the rest


def load_json(data: bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in ``data``; ValueError naming the problem if it is not acceptable."""
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    check_depth(value, max_depth)
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """ValueError if lists and objects in ``value`` nest deeper than ``max_depth`` (iterative)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
