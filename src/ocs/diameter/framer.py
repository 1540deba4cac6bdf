"""Cut a Diameter-over-TCP byte stream into whole messages (RFC 6733 §3).

Pure: no sockets, no asyncio. The adapter feeds every chunk it reads and gets back the complete
messages, in order; a partial message stays buffered.

Rules of this file:
- Only the first 4 octets of a header decide the framing (version and Message Length), but a
  header is judged once all 20 octets are in, so that ``FramingError.header`` can carry them
  and the caller may still answer a request before closing.
- An unusable header is fatal for the connection, because nothing after it can be located:
  ``feed`` raises ``FramingError`` and every later ``feed`` raises it again. The caller must
  close the connection (after answering the request, if it wishes, from ``error.header``).
  Result codes (RFC 6733 §7.1.5): a version other than 1 → 5011 DIAMETER_UNSUPPORTED_VERSION;
  a Message Length below 20, not a multiple of 4 (§3: "always a multiple of 4") or above
  ``max_message_length`` → 5015 DIAMETER_INVALID_MESSAGE_LENGTH ("a request is received with an
  invalid message length"; a length beyond our limit is invalid for us and cannot be skipped
  safely).
- Linear in the octets fed, however the stream is chunked: the buffer is a bytearray that grows
  by appending and shrinks from the front (O(1) in CPython), and a header is examined once per
  ``feed`` call, never rescanned octet by octet.
- ``pending_bytes`` is what the slow-peer read timeout looks at: a peer that keeps a partial
  message buffered for too long is cut off by the adapter, not here (no clock in this file).
"""

import struct
from typing import Final

from ocs.diameter.codec import (
    DIAMETER_INVALID_MESSAGE_LENGTH,
    DIAMETER_UNSUPPORTED_VERSION,
    HEADER_LENGTH,
    MAX_MESSAGE_LENGTH,
    VERSION,
)

DEFAULT_MAX_MESSAGE_LENGTH: Final = 65536

_WORD: Final = struct.Struct(">I")


class FramingError(ValueError):
    """The stream cannot be framed any further; the connection must be closed.

    ``result_code`` is the RFC 6733 §7.1.5 code for an answer; ``header`` the 20 octets of the
    offending message's header (enough to answer it with ``codec.build_error_answer``);
    ``messages`` the whole messages that preceded it in the same ``feed`` call, still to be
    handled before the connection closes.
    """

    def __init__(
        self,
        message: str,
        *,
        result_code: int,
        header: bytes,
        messages: list[bytes] | None = None,
    ):
        super().__init__(message)
        self.result_code = result_code
        self.header = header
        self.messages: list[bytes] = messages if messages is not None else []


class Framer:
    """Split a byte stream into Diameter messages of at most ``max_message_length`` octets."""

    __slots__ = ("_buffer", "_error", "_max_message_length")

    def __init__(self, max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH) -> None:
        if not HEADER_LENGTH <= max_message_length <= MAX_MESSAGE_LENGTH:
            raise ValueError(
                f"max_message_length must be between {HEADER_LENGTH} and {MAX_MESSAGE_LENGTH}, "
                f"got {max_message_length}"
            )
        self._max_message_length = max_message_length
        self._buffer = bytearray()
        self._error: FramingError | None = None

    @property
    def max_message_length(self) -> int:
        return self._max_message_length

    @property
    def pending_bytes(self) -> int:
        """Octets received that do not yet make a whole message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every message it completes, in order (possibly none).

        Raises ``FramingError`` if a header is unusable (module rules), then on every call; the
        first one carries the whole messages that came before the bad header.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        size = len(buffer)
        pos = 0
        while size - pos >= HEADER_LENGTH:
            word = _WORD.unpack_from(buffer, pos)[0]
            version = word >> 24
            length = word & 0xFFFFFF
            if (
                version != VERSION
                or length < HEADER_LENGTH
                or length & 3
                or length > self._max_message_length
            ):
                header = bytes(buffer[pos : pos + HEADER_LENGTH])
                del buffer[:pos]
                self._error = self._framing_error(version, length, header)
                # Later calls raise the same error without the messages already handed over.
                raise FramingError(
                    str(self._error),
                    result_code=self._error.result_code,
                    header=header,
                    messages=messages,
                )
            if size - pos < length:
                break
            messages.append(bytes(buffer[pos : pos + length]))
            pos += length
        if pos:
            del buffer[:pos]
        return messages

    def _framing_error(self, version: int, length: int, header: bytes) -> FramingError:
        if version != VERSION:
            return FramingError(
                f"Diameter version {version} is not supported",
                result_code=DIAMETER_UNSUPPORTED_VERSION,
                header=header,
            )
        return FramingError(
            f"Message Length {length} is invalid (at least {HEADER_LENGTH}, a multiple of 4, "
            f"at most {self._max_message_length})",
            result_code=DIAMETER_INVALID_MESSAGE_LENGTH,
            header=header,
        )
