"""The REST API's OpenAPI document: openapi.yaml next to this module (hand-maintained with the
routes of server/http.py and server/sagemaker.py), served as JSON at GET /v2/openapi.json."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson
import yaml


@cache
def openapi_document() -> dict[str, Any]:
    """The document as a dict (read once)."""
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


@cache
def openapi_json() -> bytes:
    """The document as the JSON body GET /v2/openapi.json answers (encoded once)."""
    return orjson.dumps(openapi_document())
