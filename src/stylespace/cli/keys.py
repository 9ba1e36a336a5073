"""`stylespace keys`: the API keys that may change a served catalog (and read it under `serve --read-key`)."""
from __future__ import annotations

from pathlib import Path

import typer

from stylespace.cli._options import JSON_OPTION
from stylespace.cli._output import console, emit, out

keys_app = typer.Typer(no_args_is_help=True, help=(
    "API keys for the service: create one (printed once; only its hash is kept in the index folder), list "
    "them, revoke one."))

INDEX_ARGUMENT = typer.Argument(..., metavar="INDEX", help="The index folder the service serves (keys.json is kept there).")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _store(index_dir: Path):
    from stylespace.index import read_config
    from stylespace.service.keys import KeyStore

    read_config(index_dir)  # a clear error when the folder is not an index
    return KeyStore(index_dir)


@keys_app.command("create", help="Make a key and print it once (send it as `Authorization: Bearer KEY`).")
def create_cmd(
    index_dir: Path = INDEX_ARGUMENT,
    name: str = typer.Option(..., help="Who or what uses the key (shown by `keys list`, used to revoke it)."),
    scope: str = typer.Option("write", help="write (change the catalog, and read it) or read (read it, under "
                                            "`serve --read-key`)."),
    as_json: bool = JSON_OPTION,
) -> None:
    key, record = _store(index_dir).create(name, scope)
    result = {"key": key, **record.public()}

    def render(r: dict) -> None:
        console.print(f"key {r['name']!r} (id {r['id']}, scope {r['scope']}); it is shown this once, only its hash "
                      "is kept:")
        out.print(r["key"], markup=False, highlight=False)

    emit(result, as_json, render)


@keys_app.command("list", help="The keys of an index folder (names, ids, scopes, dates; never the keys).")
def list_cmd(index_dir: Path = INDEX_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    records = [r.public() for r in _store(index_dir).records()]

    def render(rows: list) -> None:
        if not rows:
            out.print(f"no keys in {index_dir}; make one with `stylespace keys create {index_dir} --name NAME`")
        for r in rows:
            state = f"revoked {r['revoked']}" if r["revoked"] else "active"
            out.print(f"{r['name']:<24} {r['id']}  {r['scope']:<5}  created {r['created']}  {state}")

    emit(records, as_json, render)


@keys_app.command("revoke", help="Revoke a key by name or id (a running service refuses it from its next request).")
def revoke_cmd(
    index_dir: Path = INDEX_ARGUMENT,
    name: str = typer.Argument(..., metavar="NAME_OR_ID", help="The key's name or id."),
    as_json: bool = JSON_OPTION,
) -> None:
    record = _store(index_dir).revoke(name)
    emit(record.public(), as_json, lambda r: out.print(f"revoked key {r['name']!r} ({r['id']})"))
