"""Object ids: the blake3 hash of an object's encoded bytes."""

from __future__ import annotations

from typing import NewType

import blake3

__all__ = [
    "ID_SIZE",
    "ObjectId",
    "from_hex",
    "hash_bytes",
    "to_hex",
]

ObjectId = NewType("ObjectId", bytes)

ID_SIZE = 32


#: Inputs at least this long are hashed on several threads (blake3 splits them itself; on
#: shorter ones starting the threads costs more than it saves).
_THREADED_BYTES = 1 << 20


def hash_bytes(data: bytes | memoryview) -> ObjectId:
    """Return the id of ``data``: its 32-byte blake3 digest."""
    if len(data) >= _THREADED_BYTES:
        return ObjectId(blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest())
    return ObjectId(blake3.blake3(data).digest())


def to_hex(oid: ObjectId) -> str:
    """Render an id as 64 lowercase hex digits."""
    return oid.hex()


def from_hex(text: str) -> ObjectId:
    """Parse 64 hex digits into an id; raises ValueError on anything else."""
    if len(text) != 2 * ID_SIZE:
        raise ValueError(f"an object id has {2 * ID_SIZE} hex digits, got {len(text)}: {text!r}")
    return ObjectId(bytes.fromhex(text))
