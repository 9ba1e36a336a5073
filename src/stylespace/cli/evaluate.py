"""`stylespace evaluate`: every figure of seeds 003 and 004 for a model or an embeddings file on a split."""
from __future__ import annotations

import dataclasses
import resource
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from stylespace.cli._output import console, emit, out
from stylespace.utils import StylespaceError, write_json


def register(app: typer.Typer) -> None:
    app.command("evaluate", short_help="Score a model or embeddings on a split: task 1, scenarios 1-4, open set, retrieval, hierarchy, pairs.", help="Score a model run folder or an embeddings .npz on a split: 004's four support-set "
                "scenarios (kNN and prototypes), open set, retrieval (P@1, R@k, MAP@R), coarser labels and pair "
                "verification (ROC, AUC, cutoffs); --compare puts several side by side.")(evaluate_cmd)


def evaluate_cmd(
    source: Path = typer.Argument(..., metavar="MODEL_OR_EMBEDDINGS",
                                  help="A model folder (model.safetensors + model.json) or an embeddings .npz."),
    split: Path = typer.Option(..., "--split", help="Split manifest CSV written by `stylespace split`."),
    catalog_path: Optional[Path] = typer.Option(None, "--catalog", help="The split's catalog (default: the one the "
                                                "split's config names); used to embed images and to read --pairs."),
    pairs_path: Optional[Path] = typer.Option(None, "--pairs", help="Pairs CSV (image_a,image_b,label with catalog ids). "
                                              "Default: same vs different article type pairs of the test items."),
    compare: Optional[List[Path]] = typer.Option(None, "--compare", help="Another model folder, embeddings .npz or "
                                                 "saved result .json to show side by side (repeat the option)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the result JSON here."),
    metric: str = typer.Option("cosine", help="cosine or euclidean, for every search, vote, prototype and pair."),
    knn: str = typer.Option("1,5", help="The k of each kNN classifier, comma-separated."),
    prototypes: bool = typer.Option(True, help="Also classify by nearest class prototype (mean embedding)."),
    retrieval: str = typer.Option("test,all", help="Retrieval sets: 'test' (main + new test items) and/or 'all' "
                                  "(every split item against every other); '' for none."),
    max_r: Optional[int] = typer.Option(None, help="Cap R for R-precision / MAP@R (default: no cap)."),
    open_set_coverage: float = typer.Option(0.95, help="Open set: the reject distance answers this share of main "
                                            "support items (leave-one-out); 0 skips the open-set check."),
    max_pairs: int = typer.Option(1_000_000, help="Default pair set: all test pairs up to this many, else a sample."),
    batch_size: int = typer.Option(256, help="Images per forward pass when embedding with a model."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (for a model)."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Also measure every figure without the query items that have "
                                "a copy on the reference side (pixel-identical images, or near copies by the first "
                                "source's embeddings, as `stylespace audit` finds them): both are reported."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Take the copies from this `stylespace audit` folder "
                                         "(or its audit.json) instead of finding them; implies --dedupe."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    from stylespace.data import SplitManifest
    from stylespace.evaluation import EvaluationConfig

    started = time.perf_counter()
    manifest = SplitManifest.load(split)
    config = EvaluationConfig(metric=metric, knn_k=_ints(knn, "--knn"), prototypes=prototypes,
                              retrieval_sets=tuple(p.strip() for p in retrieval.split(",") if p.strip()),
                              max_r=max_r, open_set_coverage=open_set_coverage, max_pairs=max_pairs)
    context = _Context(manifest, split, catalog_path, pairs_path, config, batch_size, device, progress=not as_json,
                       dedupe=dedupe or audit is not None, audit_path=audit)
    reports = [context.evaluate(source)]
    compared = [(reports[0].name, reports[0].headline())]
    for other in compare or []:
        if other.suffix == ".json":
            from stylespace.evaluation import load_headlines

            compared.extend(load_headlines(other))
        else:
            reports.append(context.evaluate(other))
            compared.append((reports[-1].name, reports[-1].headline()))
    for report in reports:
        report.seconds["total"] = round(time.perf_counter() - started, 3)
        report.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result = reports[0].to_dict() if len(compared) == 1 else {
        "reports": [r.to_dict() for r in reports],
        "comparison": {"names": [n for n, _ in compared], "figures": _comparison_rows(compared)},
    }
    if output is not None:
        write_json(output, result)

    def render(_: dict) -> None:
        from stylespace.evaluation import compare_markdown

        for report in reports:
            out.print(report.to_markdown(), markup=False, highlight=False, soft_wrap=True)
            out.print()
        if len(compared) > 1:
            out.print("## Side by side\n\n" + compare_markdown(compared), markup=False, highlight=False, soft_wrap=True)
        seconds = reports[0].seconds
        console.print(f"done in {seconds['total']:.1f} s, peak memory {reports[0].peak_rss_mb:,.0f} MB"
                      + (f"; result written to {output}" if output else ""))

    emit(result, as_json, render)


def _comparison_rows(compared: list[tuple[str, dict[str, float]]]) -> dict[str, list[float | None]]:
    keys = list(dict.fromkeys(k for _, headline in compared for k in headline))
    return {k: [headline.get(k) for _, headline in compared] for k in keys}


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise StylespaceError(f"{option} expects comma-separated integers such as 1,5; got {text!r}") from None
    if any(v < 1 for v in values):
        raise StylespaceError(f"{option}: every k must be >= 1, got {text!r}")
    return values


@dataclasses.dataclass
class _Context:
    """What every evaluated source shares: the split, the catalog (read once), the pair set, the config."""

    manifest: object
    split_path: Path
    catalog_path: Path | None
    pairs_path: Path | None
    config: object
    batch_size: int
    device: str
    progress: bool
    dedupe: bool = False
    audit_path: Path | None = None

    def __post_init__(self) -> None:
        self._catalog = None
        self._pairs = None
        self._copies = None
        if self.pairs_path is not None:
            from stylespace.data import load_catalog

            pairs = load_catalog(self.pairs_path, kind="pairs", base=self.catalog()).pairs
            if not pairs:
                raise StylespaceError(f"{self.pairs_path}: no usable pairs (are its ids from {self.catalog().source_path}?)")
            ids_a, ids_b, labels = zip(*pairs)
            self._pairs = (list(ids_a), list(ids_b), list(labels))

    def catalog(self):
        """The split's catalog, read once: --catalog, else the path recorded in the split's config."""
        if self._catalog is None:
            from stylespace.data import load_catalog

            path = self.catalog_path or (Path(self.manifest.config.catalog) if self.manifest.config.catalog else None)
            if path is None or not path.exists():
                raise StylespaceError(f"{self.split_path}: the catalog it was made from is not known or not found "
                                      f"({path}); pass --catalog PATH")
            self._catalog = load_catalog(path, label_column=self.manifest.config.label_column or None)
        return self._catalog

    def evaluate(self, source: Path):
        from stylespace.evaluation import VectorTable, evaluate

        began = time.perf_counter()
        embeddings, head, head_ids = self._vectors(source)
        embed_seconds = round(time.perf_counter() - began, 3)
        copies, copies_source, copies_seconds = None, "", None
        if self.dedupe:
            began = time.perf_counter()
            copies, copies_source = self.copies(source, embeddings)
            copies_seconds = round(time.perf_counter() - began, 3)
        log = (lambda message: console.print(f"[dim]{source.name}: {message}[/dim]")) if self.progress else None
        report = evaluate(
            VectorTable(embeddings.ids, embeddings.vectors), self.manifest, self.config, name=source.name or str(source),
            source=str(source), model_id=embeddings.model_id, split_path=str(self.split_path), pairs=self._pairs,
            pairs_source=str(self.pairs_path) if self.pairs_path else "", head=head, head_ids=head_ids,
            copies=copies, copies_source=copies_source, log=log)
        report.seconds = {"load or embed": embed_seconds, **({"copies": copies_seconds} if copies_seconds is not None
                                                             else {}), **report.seconds}
        failed = embeddings.meta.get("failed") or {}
        if failed:
            report.notes.append(f"{len(failed)} images failed to decode and have no vector")
        return report

    def copies(self, source: Path, embeddings) -> tuple[list[list[str]], str]:
        """The copy groups every source is measured without (found once, with the first source's vectors)."""
        if self._copies is None:
            if self.audit_path is not None:
                from stylespace.audit import load_clusters

                self._copies = load_clusters(self.audit_path)
            else:
                from stylespace.audit import NEAR_DISTANCE, NEAR_PIXELS, NEAR_SHIFT, find_copies

                size = tuple(int(v) for v in (embeddings.meta.get("input_size") or (80, 60)))
                groups = find_copies(self.catalog(), size, embeddings.ids, embeddings.vectors, progress=self.progress)
                self._copies = (groups, f"found by --dedupe: pixel-identical {size[0]}x{size[1]} views, near copies by "
                                        f"{source.name}'s embeddings (distance under {NEAR_DISTANCE['model']}, pixels "
                                        f"under {NEAR_PIXELS:g}, colour shift under {NEAR_SHIFT:g})")
        return self._copies

    def _vectors(self, source: Path):
        """(Embeddings, head (true, predicted) on main test or None, the head's ids or None) of a model folder
        or an embeddings file."""
        from stylespace.embeddings import Embeddings

        if source.is_dir():
            return self._embed_with_model(source)
        if source.suffix == ".npz":
            return Embeddings.load(source), None, None
        raise StylespaceError(f"{source}: expected a model folder (model.safetensors + model.json) or an embeddings "
                              ".npz written by `stylespace embed`")

    def _embed_with_model(self, folder: Path):
        from stylespace.data import load_image_array
        from stylespace.embeddings import embed_catalog
        from stylespace.models import load_model

        model = load_model(folder)
        catalog = self.catalog()
        embeddings = embed_catalog(model, catalog, batch_size=self.batch_size, device=self.device,
                                   progress=self.progress)
        if model.classifier is None:
            return embeddings, None, None
        main_test = self.manifest.select(group="main", split="test")
        array = load_image_array(catalog, size=tuple(model.config.input_size), progress=self.progress)
        ids = [i for i in main_test.ids if i not in array.failed]
        truth = dict(zip(main_test.ids, main_test.labels))
        predicted = _predict(model, array.take(ids), self.batch_size, self.device)
        return embeddings, ([truth[i] for i in ids], [model.classes[p] for p in predicted]), ids


def _predict(model, pixels: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    """Class indices from the model's classifier head (task 1): (N, H, W, 3) uint8 -> (N,) int64."""
    import torch

    from stylespace.utils import pick_device

    target = pick_device(device)
    model = model.to(target).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size])).to(target)
            out.append(model.predict(batch.permute(0, 3, 1, 2).float().div_(255.0)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
