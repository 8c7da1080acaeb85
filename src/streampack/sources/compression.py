"""Decompressing streams over source files, with the raw byte position kept for throughput figures.

Every reader goes through `open_stream`, so a truncated or corrupt file surfaces as one exception
type, `CorruptStream`, whatever the codec, and the format readers can keep what they already read.
"""

import bz2
import lzma
import sys
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import BinaryIO

import zstandard

from ..errors import SourceError

try:
    # python-isal's igzip is a drop-in GzipFile with a much faster inflate; used when installed,
    # never required.
    from isal import igzip as _gzip
except ImportError:
    import gzip as _gzip

# Magic bytes of each codec, checked at the start of every file: names lie more often than bytes.
MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
MAGIC_BYTES = max(len(magic) for magic, _ in MAGIC)

# What the decompressors raise on truncated or damaged input (gzip.BadGzipFile is an OSError).
_CODEC_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)
# Decompressed bytes per read from gzip, bz2 and xz: what a broken stream can lose at most.
_PIECE_BYTES = 64 << 10

# Compressed bytes fed to zstd per step: its recommended input size, so one step's output stays
# within a few MB at corpus compression ratios.
_ZSTD_INPUT = zstandard.DECOMPRESSION_RECOMMENDED_INPUT_SIZE


class CorruptStream(Exception):
    """The compressed data ended early or is damaged; `str()` is the decompressor's message."""


def codec_of(head: bytes) -> str:
    """The codec whose magic bytes start `head`, else "none"."""
    for magic, codec in MAGIC:
        if head.startswith(magic):
            return codec
    return "none"


class _ZstdReader:
    """Reads zstd frames one after another and reports a frame cut short.

    zstandard's `stream_reader` returns a clean end of file when the input stops mid-frame, which
    would hide a truncated download; `decompressobj` exposes `eof`, so the check is possible here.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._frame_started = False
        self._done = False
        # Output not yet returned is `_pending[_start:]`: slicing from an offset copies each byte
        # once, where re-slicing the remainder on every read would copy it again and again.
        self._pending = b""
        self._start = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = sys.maxsize
        have = len(self._pending) - self._start
        if have >= size:
            self._start += size
            return self._pending[self._start - size : self._start]
        out = [self._pending[self._start :]] if have else []
        self._pending, self._start = b"", 0
        while have < size and not self._done:
            data = self._raw.read(_ZSTD_INPUT)
            if not data:
                self._done = True
                if self._frame_started and not self._obj.eof:
                    raise EOFError("zstd frame ended before its end marker was reached")
                break
            while data:
                self._frame_started = True
                piece = self._obj.decompress(data)
                if piece:
                    out.append(piece)
                    have += len(piece)
                if not self._obj.eof:
                    break
                # A finished frame leaves the bytes of the next frame in unused_data.
                data = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._frame_started = False
        joined = b"".join(out)
        if len(joined) > size:
            self._pending, self._start = joined, size
            return joined[:size]
        return joined


class SourceStream:
    """Decompressed bytes of one file; `position` is how many raw bytes have been read so far."""

    def __init__(self, path: str, codec: str, raw: BinaryIO, inner) -> None:
        self.path = path
        self.codec = codec
        self._raw = raw
        self._inner = inner
        self._broken: CorruptStream | None = None

    @property
    def position(self) -> int:
        return self._raw.tell()

    def read(self, size: int = -1) -> bytes:
        if self._broken is not None:
            raise self._broken
        if self.codec in ("none", "zstd"):
            try:
                return self._inner.read(size)
            except _CODEC_ERRORS as err:
                if self.codec == "none":
                    raise SourceError(f"{self.path}: read failed: {err}") from err
                raise CorruptStream(str(err) or type(err).__name__) from err
        # gzip, bz2 and xz discard the whole call's output when the data breaks, so a large read
        # would lose every record of its last few MB: read in small pieces, hand over the pieces
        # that decompressed, and raise at the next read.
        want = sys.maxsize if size is None or size < 0 else size
        pieces: list[bytes] = []
        got = 0
        try:
            while got < want:
                piece = self._inner.read(min(_PIECE_BYTES, want - got))
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
        except _CODEC_ERRORS as err:
            self._broken = CorruptStream(str(err) or type(err).__name__)
            if not pieces:
                raise self._broken from err
        return b"".join(pieces)


@contextmanager
def open_stream(path: str, codec: str) -> Iterator[SourceStream]:
    """Open `path` and undo `codec` ("none", "gzip", "zstd", "bz2", "xz")."""
    with ExitStack() as stack:
        try:
            raw = stack.enter_context(open(path, "rb"))
        except OSError as err:
            raise SourceError(f"{path}: cannot open: {err.strerror or err}") from err
        if codec == "none":
            inner = raw
        elif codec == "gzip":
            inner = stack.enter_context(_gzip.GzipFile(fileobj=raw, mode="rb"))
        elif codec == "zstd":
            inner = _ZstdReader(raw)
        elif codec == "bz2":
            inner = stack.enter_context(bz2.BZ2File(raw, mode="rb"))
        elif codec == "xz":
            inner = stack.enter_context(lzma.LZMAFile(raw, mode="rb"))
        else:
            raise SourceError(
                f"{path}: unknown codec {codec!r}; expected none, gzip, zstd, bz2 or xz"
            )
        yield SourceStream(path, codec, raw, inner)
