"""`stylespace bench NAME`: a published protocol run exactly, our figure beside the published ones."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from stylespace.cli._options import with_engine
from stylespace.cli._output import console, emit, out
from stylespace.evaluation.published import BENCHMARKS, BenchResult, benchmark, percent


def register(app: typer.Typer) -> None:
    app.command("bench", short_help="Run a published protocol (fashion-mnist, year-split, episodes) beside the "
                                    "published figures.",
                help="Run a published protocol exactly and print our figure beside the published ones, each with "
                     "its source: fashion-mnist (official 60,000 / 10,000 split; trains the small preset unless "
                     "--model), year-split (Fashion Product Images, 20 most frequent article types, even years train, "
                     "odd years test, top-1 / top-5) or episodes (5-way 1-shot, 5-way 5-shot, 15-way 5-shot over the "
                     "004 split's new article types). Nothing is chosen on a test part.")(bench_cmd)


@with_engine
def bench_cmd(
    name: str = typer.Argument(..., metavar="NAME", help=f"The protocol: {', '.join(BENCHMARKS)}."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder or shipped name to measure (year-split, "
                                        "episodes: default `default`; fashion-mnist: trains the small preset without it)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The catalog: Fashion-MNIST's IDX folder (default "
                                        "/usr/share/datasets/fashion-mnist) or Fashion Product Images (default "
                                        "../shared/datasets/fashion-product-images-small.zip)."),
    train: bool = typer.Option(False, "--train", help="year-split: train a model on the even years only (--preset, "
                                                      "default `default`) instead of taking --model."),
    preset_name: Optional[str] = typer.Option(None, "--preset", help="The preset a model is trained with here "
                                              "(fashion-mnist: small; year-split --train: default)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Change the preset's epochs (recorded as a deviation)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: split, trained model, result.json "
                                           "(default runs/bench/NAME)."),
    split: Optional[Path] = typer.Option(None, "--split", help="episodes: the 004 split manifest whose new article "
                                         "types the episodes use (default: made from the catalog)."),
    classes: Optional[int] = typer.Option(None, "--classes", help="year-split: most frequent article types (published: 20)."),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="episodes: episodes per setting (published: 1,000)."),
    queries: Optional[int] = typer.Option(None, "--queries", help="episodes: query items per class (published: 1)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the validation part and of the episodes (0)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    published: bool = typer.Option(False, "--published", help="Only print the published figures with their sources "
                                                              "(runs nothing)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    from stylespace.evaluation.benchmarks import BenchConfig, run_benchmark

    if published:
        chosen = benchmark(name)
        result = BenchResult.with_published(chosen, [], model={}, details={})
        emit(result.to_dict(), as_json, lambda r: _render(result))
        return
    given = dict(data=data and str(data), model=model, train=train, preset=preset_name, epochs=epochs,
                 out=out_dir and str(out_dir), split=split and str(split), classes=classes, episodes=episodes,
                 queries=queries, seed=seed, device=device)
    config = BenchConfig(name, **{k: v for k, v in given.items() if v is not None})
    result = run_benchmark(config, progress=not as_json, log=lambda line: console.print(line))
    emit(result.to_dict(), as_json, lambda r: _render(result, config.folder))


def _render(result: BenchResult, folder: Path | None = None) -> None:
    """The table, each published row pointing to its numbered source (printed whole under the table)."""
    chosen = result.benchmark
    table = Table(title=f"{chosen.title}: {chosen.protocol}", title_justify="left")
    table.add_column("method")
    for metric in chosen.metrics:
        table.add_column(metric.label, justify="right")
    table.add_column("source")
    sources: dict[tuple[str, str], int] = {}
    for row in result.rows:
        if row.ours:
            source = row.source
        else:
            number = sources.setdefault((row.source, row.url), len(sources) + 1)
            source = f"[{number}]"
        table.add_row(f"[bold]{row.method}[/bold]" if row.ours else row.method,
                      *[percent(row.values.get(m.key), row.interval.get(m.key)) for m in chosen.metrics],
                      source + (f"; {row.note}" if row.note else ""))
    out.print(table)
    for (source, url), number in sources.items():
        out.print(f"[{number}] {source}: {url}", soft_wrap=True, highlight=False, markup=False)
    for caveat in result.caveats:
        out.print(f"note: {caveat}")
    if folder is not None:
        out.print(f"{result.seconds:,.0f} s; everything in {folder / 'result.json'}")
