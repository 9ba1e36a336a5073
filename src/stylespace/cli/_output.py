"""How commands print: a Rich rendering for people, or exactly one JSON document with --json."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

from stylespace.utils import plain_console, to_jsonable

# Progress bars and notes go to stderr (stylespace.progress's console) so that stdout holds only the result
# (one JSON document with --json).
from stylespace.progress import console  # noqa: E402  (re-exported: the CLI's modules import it from here)

out = plain_console()  # wraps on a terminal only: a log gets every command whole


def emit(result: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print ``result``: as one JSON document on stdout, or through ``render`` for a person."""
    if as_json:
        sys.stdout.write(json.dumps(to_jsonable(result), indent=2) + "\n")
        sys.stdout.flush()
    elif render is not None:
        render(result)
    else:
        out.print_json(json.dumps(to_jsonable(result)))
