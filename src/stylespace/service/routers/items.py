"""Changing the catalog while it serves: put an item (an image and its metadata), change its metadata or
image, remove it, or many at once.

Every write needs ``Authorization: Bearer KEY`` with a key of scope ``write`` (auth.py) and is answered
only once its change is committed, with the index's revision after it (:class:`schemas.WriteAnswer`);
searches on this process see it from then on, other workers within their refresh interval. Uploads are
read and decoded by the same bounded path as searches (uploads.py, decoding.py). A retried request
changes nothing the first one did not: an item put again with the same id, image and metadata is left
alone (``unchanged``), an id made by the server comes from the image and metadata (the same again). Bad
input is a 4xx whose body names the field (``{"error": {"code", "message", "field"}}``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, File, Form, Path as PathParam, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as StarletteUpload

from stylespace.service.dependencies import decode
from stylespace.service.engine import Upload
from stylespace.service.errors import api_error, error_responses
from stylespace.service.headers import short
from stylespace.service.uploads import read_upload

router = APIRouter(tags=["catalog changes"])

MAX_BATCH = 64  # items one batch request may put
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_COLUMNS = 64
MAX_VALUE_CHARS = 2_000
MAX_METADATA_BYTES = 16_384

ITEM_ID = Annotated[str, PathParam(description="A catalog item id.")]
WRITE_RESPONSES = error_responses("unauthorized", "forbidden", "too_many_failures", "key_in_query", "unknown_item",
                                  "upload_too_large", "not_an_image", "invalid_request", "invalid_input",
                                  "empty_upload", "unreadable_image", "image_too_large", "blank_image", "busy")


class WriteAnswer(BaseModel):
    """A committed change: where the index stands after it, and what happened to each id."""

    generation: int = Field(description="The index's generation (bumped by rebuilds).")
    revision: int = Field(description="The index's revision once this change was committed; searches on every "
                                      "worker see it once they stand at this revision or later.")
    created: list[str] = Field(description="Ids added.")
    replaced: list[str] = Field(description="Ids that were there and were put again with another image or metadata.")
    updated: list[str] = Field(description="Ids whose label or metadata changed.")
    removed: list[str] = Field(description="Ids removed.")
    unchanged: list[str] = Field(description="Ids already exactly as asked (a retried request): nothing written.")
    item_url: str | None = Field(None, description="Where the item is read back (single-item writes).")


class ItemChange(BaseModel):
    """A change of an item's label and metadata (PATCH): fields left out are kept."""

    label: str | None = Field(None, max_length=MAX_LABEL_CHARS, description="The new label (null: no label).")
    metadata: dict[str, str | None] = Field(default_factory=dict, description="Columns to set; a null value "
                                                                              "removes the column.")


# --- the endpoints --------------------------------------------------------------------------------------------


@router.post("/items", response_model=WriteAnswer, status_code=201, responses=WRITE_RESPONSES)
async def put_item(request: Request,
                   image: Annotated[UploadFile, File(description="The item's photo (JPEG, PNG, WebP...).")],
                   item_id: Annotated[str | None, Form(alias="id", description="The item's id (default: one made "
                                                       "from the image and metadata).")] = None,
                   label: Annotated[str | None, Form(description="Its class (article type), if known.")] = None,
                   metadata: Annotated[str | None, Form(description='A JSON object of text columns, e.g. '
                                                        '{"gender": "Men", "productDisplayName": "..."}.')] = None):
    """Add an item (or put an item again under its id): its image is decoded and embedded like a search's,
    kept in the index folder, and the item committed; answered 201 when it was added, 200 otherwise."""
    engine = request.app.state.engine
    upload = await _upload(request, image, "image", _item_id(item_id, "id"), _label(label, "label"),
                           _metadata(metadata, "metadata"))
    result = await _run(engine.put_items, [upload])
    item = (result.created or result.replaced or result.unchanged)[0]
    return _answer(result, item, 201 if result.created else 200)


@router.post("/items/batch", response_model=WriteAnswer, responses=WRITE_RESPONSES)
async def put_batch(request: Request):
    """Put and remove many items in one change (one commit, one revision): a multipart form with ``items``,
    a JSON array of ``{"id", "label", "metadata", "image"}`` where ``image`` names a file part of the form,
    and ``remove``, a JSON array of ids; up to 64 items."""
    engine = request.app.state.engine
    form = await request.form(max_files=MAX_BATCH, max_fields=MAX_BATCH + 8)
    entries = _json_field(form.get("items"), "items", list, default=[])
    removals = _json_field(form.get("remove"), "remove", list, default=[])
    if not entries and not removals:
        api_error(422, "invalid_request", "give `items` (a JSON array) or `remove` (a JSON array of ids)", "items")
    if len(entries) > MAX_BATCH:
        api_error(422, "invalid_request", f"at most {MAX_BATCH} items a batch, got {len(entries)}", "items")
    uploads, decoded = [], {}  # a file part named by several items is read and decoded once
    for n, entry in enumerate(entries):
        where = f"items[{n}]"
        if not isinstance(entry, dict):
            api_error(422, "invalid_request", f"{where}: expected an object with an image", where)
        unknown = sorted(set(entry) - {"id", "label", "metadata", "image"})
        if unknown:
            api_error(422, "invalid_request", f"{where}: unknown field(s) {unknown}", f"{where}.{unknown[0]}")
        part = entry.get("image")
        file = form.get(part) if isinstance(part, str) else None
        if not isinstance(file, StarletteUpload):
            api_error(422, "invalid_request", f"{where}.image: name the form's file part that holds the "
                                              f"item's image (got {short(part)!r})", f"{where}.image")
        item_id, label = _item_id(entry.get("id"), f"{where}.id"), _label(entry.get("label"), f"{where}.label")
        meta = _metadata_object(entry.get("metadata", {}), f"{where}.metadata")
        if part not in decoded:
            decoded[part] = await _upload(request, file, f"{where}.image", None, None, {})
        uploads.append(dataclasses.replace(decoded[part], id=item_id, label=label, meta=meta))
    ids = [u.id for u in uploads if u.id is not None]
    if len(set(ids)) != len(ids):
        api_error(422, "invalid_request", "items: an id is given twice", "items")
    remove_ids = [_item_id(r, f"remove[{n}]") for n, r in enumerate(removals)]
    result = await _run(engine.put_items, uploads, "replace", remove_ids)
    return _answer(result, None, 200)


@router.patch("/items/{item_id:path}", response_model=WriteAnswer, responses=WRITE_RESPONSES)
async def change_item(request: Request, item_id: ITEM_ID,
                      change: Annotated[ItemChange, Body(description="What to change.")]):
    """Change an item's label and metadata (its image and vector stay)."""
    from stylespace.index.writes import ItemPatch

    engine = request.app.state.engine
    meta = _metadata_object(change.metadata, "metadata", allow_null=True)
    patch = ItemPatch(meta=meta, label=_label(change.label, "label"), set_label="label" in change.model_fields_set)
    result = await _run(engine.update_items, {item_id: patch})
    return _answer(result, item_id, 200)


@router.put("/items/{item_id:path}/image", response_model=WriteAnswer, responses=WRITE_RESPONSES)
async def replace_image(request: Request, item_id: ITEM_ID,
                        image: Annotated[UploadFile, File(description="The item's new photo.")]):
    """Give an item a new image: decoded, embedded again and committed; its label and metadata stay."""
    engine = request.app.state.engine
    await _run(engine.current_item, item_id)  # an unknown id is answered 404 before its upload is decoded
    upload = await _upload(request, image, "image", item_id, None, {})
    result = await _run(engine.replace_image, item_id, upload)
    return _answer(result, item_id, 200)


@router.delete("/items/{item_id:path}", response_model=WriteAnswer, responses=WRITE_RESPONSES)
async def remove_item(request: Request, item_id: ITEM_ID):
    """Remove an item (a removed id is unknown afterwards: removing it again answers 404)."""
    engine = request.app.state.engine
    result = await _run(engine.remove_items, [item_id])
    return _answer(result, None, 200)


# --- reading and checking a write's fields ----------------------------------------------------------------------


async def _upload(request: Request, file, field: str, item_id: str | None, label: str | None,
                  meta: dict[str, str]) -> Upload:
    """Read (bounded), decode (bounded, on the decoding lanes) and check one uploaded image."""
    from stylespace.data.images import probe_image

    engine, decoder = request.app.state.engine, request.app.state.decoder
    data = await read_upload(file, request.app.state.limits.max_upload_bytes, field)
    view = await decode(decoder, data, engine.input_size, field)
    if view.blank:
        api_error(422, "blank_image", f"{field}: the picture is blank or almost uniform; send a photo of "
                                      "the product", field)
    return Upload(data, view, probe_image(data, engine.input_size).format, item_id, label, meta)


def _item_id(value, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        api_error(422, "invalid_request", f"{field}: expected text, got {type(value).__name__}", field)
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable() or value != value.strip():
        api_error(422, "invalid_request", f"{field}: an id is 1-{MAX_ID_CHARS} printable characters without "
                                          f"spaces around, got {short(value)!r}", field)
    if value.endswith(("/image", "/similar")) or value.startswith("/"):
        api_error(422, "invalid_request", f"{field}: an id may not start with / nor end with /image or "
                                          "/similar (they are the item's own addresses)", field)
    return value


def _label(value, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL_CHARS:
        api_error(422, "invalid_request", f"{field}: expected text of 1-{MAX_LABEL_CHARS} characters", field)
    return value


def _metadata(text: str | None, field: str) -> dict[str, str]:
    return _metadata_object(_json_field(text, field, dict, default={}), field)


def _metadata_object(value, field: str, allow_null: bool = False) -> dict:
    if not isinstance(value, dict):
        api_error(422, "invalid_request", f"{field}: expected a JSON object of text columns, got "
                                          f"{type(value).__name__}", field)
    if len(value) > MAX_COLUMNS or len(json.dumps(value)) > MAX_METADATA_BYTES:
        api_error(422, "invalid_request", f"{field}: at most {MAX_COLUMNS} columns and "
                                          f"{MAX_METADATA_BYTES:,} bytes", field)
    out = {}
    for column, v in value.items():
        if not isinstance(column, str) or not column or len(column) > 128 or column == "label":
            api_error(422, "invalid_request", f"{field}: column names are 1-128 characters (the label is "
                                              "its own field)", field)
        if v is None and allow_null:
            out[column] = None
        elif isinstance(v, (str, int, float)) and not isinstance(v, bool) and len(str(v)) <= MAX_VALUE_CHARS:
            out[column] = str(v)
        else:
            api_error(422, "invalid_request", f"{field}.{short(column)}: expected text (at most "
                                              f"{MAX_VALUE_CHARS:,} characters), got {type(v).__name__}",
                      f"{field}.{column}")
    return out


def _json_field(text, field: str, kind: type, default):
    if text is None or text == "":
        return default
    if not isinstance(text, str):
        api_error(422, "invalid_request", f"{field}: expected a form field of JSON text, not a file", field)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        api_error(422, "invalid_request", f"{field}: not valid JSON ({exc.msg})", field)
    if not isinstance(value, kind):
        api_error(422, "invalid_request", f"{field}: expected a JSON {'object' if kind is dict else 'array'}, "
                                          f"got {type(value).__name__}", field)
    return value


async def _run(change, *args):
    """Run a write on a worker thread (an unknown id is answered 404 ``unknown_item``, any other refusal of
    the index 422 ``invalid_input``: the app's handler of StylespaceError)."""
    return await run_in_threadpool(change, *args)


def _answer(result, item_id: str | None, status: int) -> JSONResponse:
    body = WriteAnswer(**result.to_dict(),
                       item_url=None if item_id is None else f"/items/{quote(item_id, safe='')}")
    return JSONResponse(body.model_dump(), status_code=status)
