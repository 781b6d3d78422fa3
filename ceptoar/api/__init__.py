"""The HTTP application: the feed ingestion endpoint (`app.py`) and its server (`server.py`)."""

from ceptoar.api.app import create_app, sign
from ceptoar.api.server import serve_api

__all__ = ["create_app", "serve_api", "sign"]
