"""What the index, search and recommend commands share: their common options, `--where` parsing and the
tables they print (argument handling and presentation only; the work is in the library)."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import typer
from rich.table import Table

from stylespace.cli._output import out
from stylespace.data.query_views import QueryViews
from stylespace.index.build import BLANK_REASON
from stylespace.ray_embedding import RayConfig
from stylespace.utils import StylespaceError

SHOWN_COLUMNS = ("productDisplayName", "gender", "baseColour")

# Options several commands share (Typer reads these as plain metadata, so one object serves them all).
MODEL_OPTION = typer.Option(None, "--model", help="Model folder that embeds images (default: the index's own).")
BATCH_OPTION = typer.Option(256, "--batch-size", help="Images per forward pass.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu or cuda.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout.")
ENGINE_OPTION = typer.Option("auto", "--engine", help="What runs the model: auto (ONNX Runtime on a CPU when it is "
                                                      "installed and worth exporting the model, PyTorch on CUDA), "
                                                      "torch or onnx.")
PRECISION_OPTION = typer.Option("fp32", "--precision", help="fp32, or int8: the model quantised to 8-bit integers "
                                                            "on ONNX Runtime (made on first use beside the model, "
                                                            "calibrated on a seeded sample of the catalog embedded; "
                                                            "its vectors are close to fp32's, not equal).")
INCLUDE_BLANK_OPTION = typer.Option(False, "--include-blank", help="Index catalog items whose image is blank or "
                                                                   "nearly uniform too (default: left out, reported).")
RAY_OPTION = typer.Option(False, "--ray", help="Decode and embed on a Ray cluster with Ray Data (a local Ray on "
                                                "this machine unless --ray-address); needs stylespace[distributed].")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", metavar="ADDRESS",
                                  help="The Ray cluster to join (auto, HOST:6379 or ray://HOST:10001); implies --ray.")
WHERE_OPTION_HELP = ("Keep items whose metadata COLUMN=VALUE (repeatable: values of one column OR, columns AND), "
                     "e.g. gender=Men.")


def default_of(config: type, field: str) -> Any:
    """The default of ``field`` in the config dataclass ``config`` (the one place it is said)."""
    for f in dataclasses.fields(config):
        if f.name == field:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise TypeError(f"{config.__name__}.{field} has no default")
    raise TypeError(f"{config.__name__} has no field {field!r}")


def setting(config: type, field: str, *names: str, help: str, shown: str | None = None, **options: Any):
    """An option that sets ``field`` of the config dataclass ``config``: None unless given (then the config's
    own default applies, so it is said once), its help ending with that default (or ``shown``).

    >>> nprobe: Optional[int] = setting(IndexSettings, "nprobe", help="IVF cells visited per query.")
    """
    default = default_of(config, field)
    text = shown if shown is not None else ("on" if default is True else "off" if default is False else
                                           "none" if default in ("", None) else str(default))
    return typer.Option(None, *names, help=f"{help} (default: {text})", **options)


def given(**options: Any) -> dict[str, Any]:
    """The options that were given (not None): what overrides a config's defaults."""
    return {name: value for name, value in options.items() if value is not None}


QUERY_VIEWS_OPTION = setting(QueryViews, "views", "--query-views", shown="none", metavar="VIEWS",
                             help="Also search each query image as these views, keeping each item's best score: "
                                  "mirror (flipped left to right), unstretch (resized to the catalog's aspect "
                                  "ratio: undoes a stretched photo), comma-separated, all, or none.")
RAY_WORKERS_OPTION = setting(RayConfig, "workers", "--ray-workers",
                             help="Ray embedding workers (0 = one per CPU of the cluster).")
RAY_GPUS_OPTION = setting(RayConfig, "gpus_per_worker", "--ray-gpus-per-worker",
                          help="GPU share each Ray worker embeds on (0 = CPUs).")


def with_engine(command):
    """Give ``command`` the ``--engine`` and ``--precision`` options: everything it embeds runs on that engine at
    that precision (:func:`stylespace.inference.engine_choice`, :func:`~stylespace.inference.precision_choice`),
    with no engine argument threaded through the library."""
    signature = inspect.signature(command)
    if "engine" in signature.parameters or "precision" in signature.parameters:
        raise TypeError(f"{command.__name__} already takes an engine or precision argument")

    @functools.wraps(command)
    def run(*args, **kwargs):
        from stylespace.inference import engine_choice, precision_choice

        with engine_choice(kwargs.pop("engine", "auto")), precision_choice(kwargs.pop("precision", "fp32")):
            return command(*args, **kwargs)

    parameters = list(signature.parameters.values())
    options = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=str)
               for name, default in (("engine", ENGINE_OPTION), ("precision", PRECISION_OPTION))]
    last = len(parameters) - (parameters[-1].name == "as_json")  # before --json, as the other options are
    run.__signature__ = signature.replace(parameters=[*parameters[:last], *options, *parameters[last:]])
    return run


def parse_where(entries: list[str] | None) -> dict[str, list[str]] | None:
    """``["gender=Men", "gender=Unisex", "season=Summer"]`` -> {"gender": ["Men", "Unisex"], "season": ["Summer"]}."""
    if not entries:
        return None
    where: dict[str, list[str]] = {}
    for entry in entries:
        column, sep, value = entry.partition("=")
        if not sep or not column.strip():
            raise StylespaceError(f"--where {entry!r}: expected COLUMN=VALUE, e.g. --where gender=Men")
        where.setdefault(column.strip(), []).append(value.strip())
    return where


def hit_record(rank: int, hit) -> dict:
    return {"rank": rank, "id": hit.id, "score": hit.score, "label": hit.label, "meta": hit.meta}


def hits_table(title: str, hits: list[dict], score_name: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("id")
    table.add_column(score_name, justify="right")
    table.add_column("label")
    columns = [c for c in SHOWN_COLUMNS if any(c in h["meta"] for h in hits)]
    for column in columns:
        table.add_column(column)
    for h in hits:
        table.add_row(str(h["rank"]), h["id"], f"{h['score']:.4f}", h["label"] or "",
                      *[h["meta"].get(c, "") for c in columns])
    return table


def blank_count(left_out: dict[str, str]) -> int:
    return sum(1 for reason in left_out.values() if reason == BLANK_REASON)


def print_left_out(left_out: dict[str, str]) -> None:
    """One line per reason items were left out of an index (undecodable, blank), with a few ids."""
    by_reason: dict[str, list[str]] = {}
    for item_id, reason in left_out.items():
        by_reason.setdefault(reason, []).append(item_id)
    for reason, ids in by_reason.items():
        hint = " (index them anyway with --include-blank)" if reason == BLANK_REASON else ""
        out.print(f"{len(ids):,} item(s) left out: {reason}{hint}, e.g. {', '.join(ids[:5])}")


def ray_config(ray: bool, address: str | None, workers: int | None, gpus_per_worker: float | None = None):
    """The RayConfig that --ray / --ray-address / --ray-workers / --ray-gpus-per-worker ask for, or None."""
    if not ray and not address:
        return None
    return RayConfig(**given(address=address, workers=workers, gpus_per_worker=gpus_per_worker))
