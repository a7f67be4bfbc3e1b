"""The OpenAI-compatible frontend server."""

from dynamo_media.server._app import create_app, error_body
from dynamo_media.server._settings import (
    ServerConfig,
    ServerSettings,
    default_config,
    load_config,
    parse_config,
)

__all__ = [
    "ServerConfig",
    "ServerSettings",
    "create_app",
    "default_config",
    "error_body",
    "load_config",
    "parse_config",
]
