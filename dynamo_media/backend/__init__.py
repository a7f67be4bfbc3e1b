"""The reference torch backend: reads media over NIXL and describes what arrived."""

from dynamo_media.backend._app import create_backend_app, describe_items

__all__ = ["create_backend_app", "describe_items"]
