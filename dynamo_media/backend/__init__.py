"""The reference backends: read media over NIXL and answer what arrived; served over OpenAI's
HTTP API (``create_backend_app``) or as a worker on Dynamo's runtime (``serve_worker``).

The echo backend (``echo``) describes each tensor. The torch backend (``_torch.TorchBackend``)
runs a model family's HF processor and a tiny model on them; it needs the ``backend`` extra
(transformers), so this package does not import it: ``dynamo-media backend --kind torch`` and
``dynamo-media worker --kind torch`` do.
"""

from dynamo_media.backend._app import create_backend_app
from dynamo_media.backend._echo import EchoAnswer, Respond, describe_items, echo
from dynamo_media.backend._worker import serve_worker

__all__ = ["EchoAnswer", "Respond", "create_backend_app", "describe_items", "echo", "serve_worker"]
