"""The OpenAI-compatible frontend server, the ``Backend`` seam it sends requests through, and
the processor that serves the same path behind ``dynamo.frontend``."""

from dynamo_media.server._app import create_app, create_chat
from dynamo_media.server._backend import Answer, Backend, Chunks
from dynamo_media.server._dynamo_backend import DynamoBackend
from dynamo_media.server._http_backend import HttpBackend
from dynamo_media.server._processor import serve_processor
from dynamo_media.server._settings import (
    ServerConfig,
    ServerSettings,
    default_config,
    load_config,
    parse_config,
)

__all__ = [
    "Answer",
    "Backend",
    "Chunks",
    "DynamoBackend",
    "HttpBackend",
    "ServerConfig",
    "ServerSettings",
    "create_app",
    "create_chat",
    "default_config",
    "load_config",
    "parse_config",
    "serve_processor",
]
