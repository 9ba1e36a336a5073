"""The web page and REST API: search by photo or catalog item, browse, compare two items.

>>> from stylespace.service import create_app
>>> app = create_app("demo/index", compat_dir="demo/compat")   # then: uvicorn.run(app)
"""
from stylespace.service.app import create_app
from stylespace.service.engine import ItemRecord, Ranking, StyleEngine, UnknownItem

__all__ = ["ItemRecord", "Ranking", "StyleEngine", "UnknownItem", "create_app"]
