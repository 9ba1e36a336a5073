"""The `stylespace` command: a thin layer over the Python API, one module per area."""
from __future__ import annotations

import importlib
import sys

import typer

from stylespace.utils import StylespaceError

app = typer.Typer(
    name="stylespace",
    help="Learn a visual style space from a fashion catalog and put it to work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each area registers its own commands; the order here is the order in `stylespace --help`.
_AREAS = ["data", "demo", "train", "evaluate", "bench", "robustness", "compat", "text", "index", "search", "recommend",
          "serve", "keys", "export", "report", "descriptors", "audit"]
for _name in _AREAS:
    importlib.import_module(f"stylespace.cli.{_name}").register(app)


def main() -> None:
    """Entry point: user errors print one clear line on stderr and exit 2, never a traceback."""
    try:
        app()  # standalone: click itself reports usage errors and exits
    except StylespaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
