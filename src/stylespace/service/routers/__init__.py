"""The REST API by area: each module holds one ``APIRouter`` (``router``) that ``create_app`` includes."""
