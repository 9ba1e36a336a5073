"""The catalog: its labels, its items page by page, one item and its image."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from stylespace.service import schemas
from stylespace.service.answers import item_full, item_summary
from stylespace.service.dependencies import Engine
from stylespace.service.errors import error_responses

router = APIRouter(tags=["catalog"])

ITEM_ID = Annotated[str, Path(description="A catalog item id.")]


@router.get("/items/{item_id:path}/image",
            responses={200: {"content": {"image/*": {}}, "description": "The item's image as stored."},
                       **error_responses("unknown_item", "unreadable_catalog_image")})
def item_image(engine: Engine, item_id: ITEM_ID):
    """The item's image, read from the catalog's source (folder or zip)."""
    data, media_type = engine.image(item_id)
    # Catalog images change only when the catalog does (and then the index is rebuilt).
    return Response(data, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/items/{item_id:path}", response_model=schemas.Item, responses=error_responses("unknown_item"))
def item(engine: Engine, item_id: ITEM_ID):
    """One item's label and metadata."""
    return item_full(engine.item(item_id))


@router.get("/classes", response_model=list[schemas.ClassCount])
def classes(engine: Engine):
    """Labels (article types) with their item counts, most common first."""
    return [schemas.ClassCount(label=label, count=count) for label, count in engine.classes()]


@router.get("/items", response_model=schemas.ItemPage, responses=error_responses("unknown_label", "invalid_request"))
def items(engine: Engine,
          label: Annotated[str | None, Query(description="Only items with this label.")] = None,
          offset: Annotated[int, Query(ge=0)] = 0,
          limit: Annotated[int, Query(ge=1, le=500)] = 60):
    """Browse the catalog, optionally one label at a time, in catalog order."""
    total, records = engine.items(label, offset, limit)
    return schemas.ItemPage(label=label, total=total, offset=offset, limit=limit,
                            items=[item_summary(r) for r in records])
