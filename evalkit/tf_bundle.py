"""TensorFlow 2 checkpoints (tensor bundles) read without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` (an SSTable, LevelDB's table format, mapping each tensor name to a
``BundleEntryProto``: dtype, shape, shard, offset, size) plus ``PREFIX.data-0000K-of-0000N`` (the tensors' raw
little-endian bytes). This module reads exactly that: the table's footer, index block and data blocks (prefix
compressed entries), the few protobuf fields it needs, and the bytes at each entry's offset. It is ~200 lines because
the alternative was worse: PyPI's ``tensorflow-checkpoint-reader`` (0.2.2, 2023) vendors 5 MB of TensorFlow, pins
``protobuf<3.19`` (evalkit's environment has protobuf 7) and fails on NumPy 2 (``np.string_``).

Formats: tensorflow/core/lib/io/format.cc (block handles, footer, magic ``0xdb4775248b80fb57``),
tensorflow/core/lib/io/block.cc (entries and restart points), tensorflow/core/protobuf/tensor_bundle.proto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evalkit.errors import CheckpointError

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
DT_STRING = 7


class BundleError(CheckpointError):
    """A file that is not a readable TensorFlow tensor bundle."""


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


# -- protobuf wire format (just what the bundle protos use) -----------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """``(field number, value)`` of a protobuf message: ints for varint/fixed fields, bytes for length-delimited."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 1:
            out.append((number, struct.unpack_from("<Q", buf, pos)[0]))
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            out.append((number, buf[pos : pos + length]))
            pos += length
        elif wire == 5:
            out.append((number, struct.unpack_from("<I", buf, pos)[0]))
            pos += 4
        else:
            raise BundleError(f"unsupported protobuf wire type {wire}")
    return out


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in _fields(buf):
        if number == 2 and isinstance(value, bytes):  # TensorShapeProto.dim
            size = next((v for n, v in _fields(value) if n == 1), 0)
            dims.append(int(size))
    return tuple(dims)


def _entry(name: str, value: bytes) -> Entry:
    dtype = shard = offset = size = 0
    shape: tuple[int, ...] = ()
    for number, field in _fields(value):
        if number == 1 and isinstance(field, int):
            dtype = field
        elif number == 2 and isinstance(field, bytes):
            shape = _shape(field)
        elif number == 3 and isinstance(field, int):
            shard = field
        elif number == 4 and isinstance(field, int):
            offset = field
        elif number == 5 and isinstance(field, int):
            size = field
        elif number == 7:
            raise BundleError(f"tensor '{name}' is stored in slices, which this reader does not support")
    return Entry(name, dtype, shape, shard, offset, size)


# -- the SSTable -----------------------------------------------------------------------------------------------------
def _block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    if offset + size + BLOCK_TRAILER > len(data):
        raise BundleError(f"{path}: block at {offset} (+{size}) runs past the end of the file: it is truncated")
    if data[offset + size] != 0:
        raise BundleError(
            f"{path}: block at {offset} is compressed (type {data[offset + size]}); only uncompressed "
            f"tables (TensorFlow's default for checkpoints) are supported"
        )
    return data[offset : offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    out, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + length]))
        pos += length
    return out


def read_index(path: str | Path) -> tuple[int, dict[str, Entry]]:
    """``(number of data shards, name -> Entry)`` of a ``.index`` file (string tensors are skipped)."""
    path = Path(path)
    try:
        return _read_index(path, path.read_bytes())
    except BundleError as exc:
        if str(path) in str(exc):
            raise
        raise BundleError(f"{path}: {exc}: the index is corrupt; download it again") from exc
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(
            f"{path} cannot be parsed as a TensorFlow checkpoint index ({type(exc).__name__}: {exc}): "
            f"the file is truncated or corrupt; download it again"
        ) from exc


def _read_index(path: Path, data: bytes) -> tuple[int, dict[str, Entry]]:
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise BundleError(
            f"{path} is not a TensorFlow checkpoint index (no table magic at its end): supply the original .index file"
        )
    footer = data[-FOOTER_SIZE:]
    _meta_offset, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    shards, entries = 1, {}
    for _, handle in _block_entries(_block(data, index_offset, index_size, path)):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block_entries(_block(data, offset, size, path)):
            if key == b"":  # BundleHeaderProto: num_shards (1), endianness (2)
                header = dict(_fields(value))
                shards = int(header.get(1, 1) or 1)
                if header.get(2, 0):
                    raise BundleError(f"{path} was written big-endian, which this reader does not support")
                continue
            entry = _entry(key.decode(), value)
            if entry.dtype != DT_STRING:
                entries[entry.name] = entry
    return shards, entries


def data_file_name(prefix: str, shard: int, shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{shards:05d}"


def read_bundle(index: str | Path, data_files: list[str | Path] | None = None) -> dict[str, np.ndarray]:
    """Every numeric tensor of a checkpoint, ``name -> array`` (TensorFlow's own names and layouts).

    ``data_files`` default to ``PREFIX.data-0000K-of-0000N`` beside the index; pass them explicitly when they were
    resolved to other folders (a cache and a mirror)."""
    index = Path(index)
    shards, entries = read_index(index)
    if data_files is None:
        prefix = str(index)[: -len(".index")] if str(index).endswith(".index") else str(index)
        data_files = [data_file_name(prefix, k, shards) for k in range(shards)]
    if len(data_files) != shards:
        raise BundleError(f"{index} names {shards} data shard(s) but {len(data_files)} data file(s) were given")
    missing = [str(f) for f in data_files if not Path(f).is_file()]
    if missing:
        raise BundleError(f"{missing[0]}: data file of checkpoint {index} not found; supply it beside the index")
    blobs = [Path(f).read_bytes() for f in data_files]
    out = {}
    for name, e in entries.items():
        if e.dtype not in DTYPES:
            raise BundleError(f"{index}: tensor '{name}' has TensorFlow dtype {e.dtype}, which has no numpy type here")
        dtype = np.dtype(DTYPES[e.dtype]).newbyteorder("<")
        count = int(np.prod(e.shape)) if e.shape else 1
        if e.size != count * dtype.itemsize:
            raise BundleError(
                f"{index}: tensor '{name}' is {e.size} bytes, but shape {e.shape} of {dtype} needs "
                f"{count * dtype.itemsize}: the index is corrupt"
            )
        blob = blobs[e.shard]
        if e.offset + e.size > len(blob):
            raise BundleError(
                f"{data_files[e.shard]} is {len(blob)} bytes but tensor '{name}' ends at byte "
                f"{e.offset + e.size}: the data file is truncated or belongs to another checkpoint"
            )
        out[name] = np.frombuffer(blob, dtype=dtype, count=count, offset=e.offset).reshape(e.shape).copy()
    return out


def expected_data_size(index: str | Path) -> list[int]:
    """The size each data shard must have at least (the end of its last tensor)."""
    shards, entries = read_index(index)
    sizes = [0] * shards
    for e in entries.values():
        sizes[e.shard] = max(sizes[e.shard], e.offset + e.size)
    return sizes


def variable_name(name: str) -> str:
    """A TF2 object-graph key without its ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix."""
    return name.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")


def write_synthetic_data(index: str | Path, out: str | Path, seed: int = 0) -> int:
    """Write a data shard for ``index`` of exactly the size it implies, every float tensor filled with
    deterministic He-scaled values (kernels) or small constants (biases); returns the bytes written.

    Why: a published ``.index`` fixes a checkpoint's layout exactly; with such a shard a loader is exercised on that
    layout, and speed measured, where the real data file cannot be had. Numbers computed with it say nothing about
    the method's quality.
    """
    shards, entries = read_index(index)
    if shards != 1:
        raise BundleError(f"{index} names {shards} data shards; synthetic data is written for single-shard bundles")
    blob = bytearray(expected_data_size(index)[0])
    rng = np.random.default_rng(seed)
    for e in sorted(entries.values(), key=lambda entry: entry.offset):
        dtype = np.dtype(DTYPES[e.dtype]).newbyteorder("<")
        if dtype.kind != "f":
            continue
        if len(e.shape) == 4:  # HWIO kernel
            fan_in = e.shape[0] * e.shape[1] * e.shape[2]
            values = rng.standard_normal(e.shape) * np.sqrt(2.0 / fan_in)
        else:
            values = np.full(e.shape, 0.01)
        blob[e.offset : e.offset + e.size] = values.astype(dtype).tobytes()
    Path(out).write_bytes(bytes(blob))
    return len(blob)
