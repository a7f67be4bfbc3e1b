"""The reference (echo) backend: reads media over NIXL and describes what arrived; served over
OpenAI's HTTP API (``create_backend_app``) or as a worker on Dynamo's runtime (``serve_worker``)."""

from dynamo_media.backend._app import create_backend_app
from dynamo_media.backend._echo import EchoAnswer, describe_items, echo
from dynamo_media.backend._worker import serve_worker

__all__ = ["EchoAnswer", "create_backend_app", "describe_items", "echo", "serve_worker"]
