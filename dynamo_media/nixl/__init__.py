"""Handing decoded tensors to a backend over NIXL: agent, pool, descriptors, and the reader."""

from dynamo_media.nixl._agent import NixlAgent, decode_metadata, encode_metadata, get_agent
from dynamo_media.nixl._pool import Region, RegistrationPool
from dynamo_media.nixl._reader import read
from dynamo_media.nixl._register import RegisteredMedia, default_pool, register_media

__all__ = [
    "NixlAgent",
    "Region",
    "RegisteredMedia",
    "RegistrationPool",
    "decode_metadata",
    "default_pool",
    "encode_metadata",
    "get_agent",
    "read",
    "register_media",
]
