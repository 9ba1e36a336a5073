"""The REST API by area: each module exposes ``router`` (a FastAPI ``APIRouter``) and reads the engine from
``request.app.state.engine``; ``create_app`` includes them."""
