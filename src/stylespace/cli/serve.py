"""`stylespace serve`: the web page and REST API over a catalog index."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from stylespace.cli._options import ENGINE_OPTION, QUERY_VIEWS_OPTION
from stylespace.cli._output import console
from stylespace.utils import StylespaceError

DEFAULT_INDEX = Path("demo/index")


def register(app: typer.Typer) -> None:
    app.command("serve", help="Start the web page and REST API (OpenAPI at /docs) over a catalog index.")(serve_cmd)


def serve_cmd(
    index_dir: Path = typer.Argument(DEFAULT_INDEX, metavar="[INDEX_DIR]",
                                     help="Index folder written by `stylespace index` (default: the demo's)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 = every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    model: Optional[Path] = typer.Option(None, help="Model folder that embeds queries (default: the index's own)."),
    compat: Optional[Path] = typer.Option(None, help="Compatibility model folder (`stylespace compat-train`) for "
                                                     "the compare view; without it /compare answers 503."),
    text_model: Optional[Path] = typer.Option(None, "--text-model", help="Text model folder for search by words "
                                                                          "(default: MODEL/text beside the index's "
                                                                          "image model, when there is one)."),
    max_upload_mb: float = typer.Option(10.0, help="Largest image upload accepted, in MB (10^6 bytes)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    engine: str = ENGINE_OPTION,
    max_decode_mpx: float = typer.Option(4.0, help="Largest image accepted, in megapixels as decoded (a JPEG "
                                                   "decodes at up to 1/8 scale); checked from the header."),
    read_key: bool = typer.Option(False, "--read-key", help="Reads need a key too (`stylespace keys create INDEX "
                                                            "--scope read`); writes always need a write key. The "
                                                            "page, /health and the API docs stay open."),
    workers: int = typer.Option(1, help="Server processes (each loads the model; all serve the one index folder "
                                        "and see each other's writes within a quarter of a second)."),
    calibration_stale_share: float = typer.Option(0.1, help="/stats reports the recommendation's calibration "
                                                            "stale once this share of its items changed."),
    query_views: Optional[str] = QUERY_VIEWS_OPTION,
) -> None:
    import uvicorn

    from stylespace.data.query_views import QueryViews
    from stylespace.service.app import SETTINGS_VARIABLE, app_from_settings

    if not 0 < port < 65536:
        raise StylespaceError(f"--port must be 1..65535, got {port}")
    if max_upload_mb <= 0:
        raise StylespaceError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    if not index_dir.is_dir():
        hint = " (run `make demo` to build it)" if index_dir == DEFAULT_INDEX else ""
        raise StylespaceError(f"{index_dir}: index folder not found{hint}; build one with `stylespace index`")
    if not 0 < max_decode_mpx <= 40:
        raise StylespaceError(f"--max-decode-mpx must be in (0, 40], got {max_decode_mpx}")
    if not 1 <= workers <= 64:
        raise StylespaceError(f"--workers must be 1..64, got {workers}")
    if not 0 < calibration_stale_share <= 1:
        raise StylespaceError(f"--calibration-stale-share must be in (0, 1], got {calibration_stale_share}")
    settings = {"index_dir": str(index_dir), "model_dir": None if model is None else str(model),
                "compat_dir": None if compat is None else str(compat), "max_upload_bytes": int(max_upload_mb * 1_000_000),
                "device": device, "inference": engine, "read_key": read_key,
                "calibration_stale_share": calibration_stale_share,
                "text_model_dir": None if text_model is None else str(text_model),
                "decoded_pixels": int(max_decode_mpx * 1_000_000),
                "query_views": ",".join(QueryViews.of(query_views).views)}  # checked here, before any worker starts
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    console.print(f"loading {index_dir} ...")
    if workers > 1:
        # Each worker process builds its own app from the settings (uvicorn starts them from an import string).
        os.environ[SETTINGS_VARIABLE] = json.dumps(settings)
        print(f"stylespace is serving {index_dir} with {workers} workers at {url}  (API: {url}/docs)", flush=True)
        uvicorn.run("stylespace.service.app:app_from_environment", factory=True, workers=workers, host=host,
                    port=port, log_level="warning")
        return
    application = app_from_settings(settings)
    # The URL goes to stdout (it is this command's result); uvicorn's log goes to stderr.
    print(f"stylespace is serving {application.state.engine.size:,} items at {url}  (API: {url}/docs)", flush=True)
    uvicorn.run(application, host=host, port=port, log_level="warning")
