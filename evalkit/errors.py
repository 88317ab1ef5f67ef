"""Error types whose message is a single line naming the file and the fix.

The harness turns these into job statuses; the CLI prints them without a traceback.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """Base class: an error a user can act on; ``str(err)`` is the whole message."""


class AssetError(EvalkitError):
    """A weight or data file is missing, corrupt, or fails its sha256 check."""


class ImageError(EvalkitError):
    """An image cannot be decoded or is unusable (absurd size, unsupported mode)."""


class UnknownMethodError(EvalkitError):
    """A method name that no installed adapter registers."""


class ProtocolError(EvalkitError):
    """A protocol file is malformed or names something that does not exist."""


class WeightsUnavailable(AssetError):
    """A method's weight set cannot be resolved (status ``unavailable``, not ``error``)."""


class CheckpointError(AssetError):
    """A weight file that cannot be read, or whose keys or tensor shapes differ from the architecture's."""
