"""The report document: sections of figures (PNG bytes), tables and measured statements, rendered to one
self-contained HTML file (figures embedded as base64 PNG, no external files, no scripts)."""
from __future__ import annotations

import base64
import dataclasses
import html
from typing import Sequence


@dataclasses.dataclass
class ReportFigure:
    """One figure: ``name`` is its PNG file name stem; ``caption`` says what was computed on which split."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclasses.dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]


@dataclasses.dataclass
class Thumbnail:
    """One small image in a gallery: encoded bytes (PNG or JPEG, ``mime``) and a caption under it."""

    data: bytes
    caption: str
    mime: str = "image/png"
    title: str = ""  # shown on hover (e.g. the item's full name)


@dataclasses.dataclass
class Gallery:
    """Rows of thumbnails, each row with a heading (a cluster of copies, a list of blank images, ...)."""

    title: str
    rows: list[tuple[str, list[Thumbnail]]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Section:
    """A report section. ``missing`` lists what could not be shown and why (the section still renders)."""

    title: str
    intro: str = ""
    figures: list[ReportFigure] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    findings: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    galleries: list[Gallery] = dataclasses.field(default_factory=list)
    # the figures behind the section, for report.json (name -> JSON-ready values)
    numbers: dict = dataclasses.field(default_factory=dict)


_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .92em; color: #444; } figcaption b { color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { background: #fff6e0; border-left: 4px solid #e0a000; padding: .5em 1em; margin: 1em 0; }
.meta td { border: none; padding: .1em .8em .1em 0; } ul.findings li { margin: .2em 0; }
.gallery h3 { font-size: 1.05em; margin: 1.2em 0 .3em; }
.gallery .row { margin: .3em 0 .8em; } .gallery .head { font-size: .9em; color: #333; margin-bottom: .2em; }
.gallery .tile { display: inline-block; vertical-align: top; width: 88px; margin: 0 4px 4px 0; font-size: .75em;
                 color: #444; overflow-wrap: anywhere; }
.gallery .tile img { display: block; border: 1px solid #ddd; max-width: 86px; }
"""


def render_html(title: str, meta: Sequence[tuple[str, str]], sections: Sequence[Section]) -> str:
    """The whole report as one HTML string; every figure is an ``<img src="data:image/png;base64,...">``."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>",
             '<table class="meta">']
    parts += [f"<tr><td><b>{esc(k)}</b></td><td>{esc(v)}</td></tr>" for k, v in meta]
    parts.append("</table>")
    parts.append("<nav><ol>" + "".join(f'<li><a href="#s{i}">{esc(s.title)}</a></li>'
                                       for i, s in enumerate(sections, 1)) + "</ol></nav>")
    for i, section in enumerate(sections, 1):
        parts.append(f'<section id="s{i}"><h2>{i}. {esc(section.title)}</h2>')
        if section.intro:
            parts.append(f"<p>{esc(section.intro)}</p>")
        for note in section.missing:
            parts.append(f'<div class="missing"><b>Not shown:</b> {esc(note)}</div>')
        for figure in section.figures:
            data = base64.b64encode(figure.png).decode("ascii")
            parts.append(f'<figure id="fig-{esc(figure.name)}"><img alt="{esc(figure.title)}" '
                         f'src="data:image/png;base64,{data}">'
                         f"<figcaption><b>{esc(figure.title)}.</b> {esc(figure.caption)} "
                         f"(<code>{esc(figure.name)}.png</code>)</figcaption></figure>")
        if section.findings:
            parts.append('<ul class="findings">' + "".join(f"<li>{esc(f)}</li>" for f in section.findings) + "</ul>")
        for table in section.tables:
            parts.append(_table(table))
        for gallery in section.galleries:
            parts.append(_gallery(gallery))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(table: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(f'<td class="num">{value:.4g}</td>')
            elif isinstance(value, int):
                cells.append(f'<td class="num">{value:,}</td>')
            else:
                cells.append(f"<td>{esc(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><caption>{esc(table.title)}</caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _gallery(gallery: Gallery) -> str:
    esc = html.escape
    out = [f'<div class="gallery"><h3>{esc(gallery.title)}</h3>']
    for heading, tiles in gallery.rows:
        out.append(f'<div class="row"><div class="head">{esc(heading)}</div>')
        for tile in tiles:
            data = base64.b64encode(tile.data).decode("ascii")
            out.append(f'<span class="tile" title="{esc(tile.title or tile.caption)}"><img alt="{esc(tile.caption)}" '
                       f'src="data:{esc(tile.mime)};base64,{data}">{esc(tile.caption)}</span>')
        out.append("</div>")
    out.append("</div>")
    return "".join(out)
