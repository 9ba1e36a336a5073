"""The REST API by area, one ``APIRouter`` each (FastAPI's "bigger applications" layout).

Each module exposes ``router``; its handlers take what they need from the app through
:mod:`stylespace.service.dependencies` (``engine: Engine``), raise errors with
:func:`stylespace.service.errors.api_error`, and document them with ``responses=error_responses(...)``.
:func:`stylespace.service.app.create_app` includes them in :data:`ROUTERS` order.
"""
