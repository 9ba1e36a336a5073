"""`stylespace export-onnx`: a model's ONNX file for ONNX Runtime, checked against PyTorch."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stylespace.cli._options import JSON_OPTION
from stylespace.cli._output import emit, out


def register(app: typer.Typer) -> None:
    app.command("export-onnx", help="Export a model to ONNX (beside it, keyed to its model id) and check that "
                                    "ONNX Runtime's embeddings equal PyTorch's; --precision int8 quantises it too.")(export_onnx_cmd)


def export_onnx_cmd(
    model_dir: Path = typer.Argument(..., metavar="MODEL", help="Model folder (`stylespace train`)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="ONNX file to write (default: "
                                                                      "MODEL/model-<model id>.onnx, or the cache "
                                                                      "when MODEL is not writable; with --precision int8 "
                                                                      "the int8 file)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or int8: also quantise the export (static, "
                                                               "calibrated on --catalog's images; "
                                                               "MODEL/model-<model id>-int8.onnx) and check its "
                                                               "vectors' cosine to fp32's."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Catalog whose images calibrate int8 (a seeded "
                                                                   "sample of 256) and check it."),
    as_json: bool = JSON_OPTION,
) -> None:
    from dataclasses import asdict

    from stylespace.inference import export_checked

    result = asdict(export_checked(model_dir, output, precision=precision, catalog=catalog))

    def render(r: dict) -> None:
        if r["precision"] == "int8":
            out.print(f"{r['onnx']}: model {r['model_id']} at int8, {r['bytes'] / 1e6:.1f} MB, calibrated on "
                      f"{r['calibration_images']} catalog images; cosine to fp32 mean {r['mean_cosine']:.4f}, least "
                      f"{r['min_cosine']:.4f} on {r['images_checked']} catalog images")
            return
        out.print(f"{r['onnx']}: model {r['model_id']}, {r['bytes'] / 1e6:.1f} MB; ONNX Runtime equals PyTorch to "
                  f"{r['max_abs_diff']:.1e} on {r['images_checked']} images")

    emit(result, as_json, render)
