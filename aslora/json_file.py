"""Reading a JSON file that someone else may have written — an adapter's config, a checkpoint's
state skeleton and manifest, a run's report: one reader, so every one of them refuses a bad file
the same way, with a ``ValueError`` naming it, and none crashes.

What it refuses: a missing or unreadable file; one larger than ``max_bytes`` (a state skeleton or a
report is kilobytes; a file of gigabytes is not one of ours and would be read whole); text that is
not UTF-8; JSON that does not parse; nesting deeper than Python's parser recurses (a
``RecursionError`` otherwise); and, with ``expect``, a top level of another type. ``NaN`` and
``Infinity`` parse, as Python's ``json`` writes them: the callers check their fields' ranges (an
adapter's tie at an infinite step is refused by ``aslora/adapter_check.py``, naming the field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_BYTES = 64 * 2**20
"""64 MiB: far above any JSON file the project writes (the largest, a report with every epoch's
test predictions, is a few MB)."""


def read_json(
    path: str | Path, what: str = "a JSON file", expect: type | None = None, max_bytes: int = MAX_BYTES
) -> Any:
    """The parsed contents of ``path``.

    Raises:
        ValueError: naming ``path`` (and ``what`` it should be) for every reason the file cannot be
            one: missing, unreadable, too large, not UTF-8, not JSON, too deep, not of type ``expect``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{path} is {size} bytes, more than any {what} file ({max_bytes} bytes at most)")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except OSError as error:
        raise ValueError(f"{path} is unreadable ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text, so not {what}") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to parse, so not {what}") from None
    except ValueError as error:  # json.JSONDecodeError
        raise ValueError(f"{path} is not valid JSON, so not {what} ({error})") from None
    if expect is not None and not isinstance(data, expect):
        raise ValueError(f"{path} is not {what}: its top level is a {type(data).__name__}, not a {expect.__name__}")
    return data
