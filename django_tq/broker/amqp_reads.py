"""A consumer's py-amqp socket read in chunks, and the frames that arrived handled without a wait.

py-amqp reads a frame in three ``recv`` calls of exactly the bytes it needs (the header, the
payload, the end octet), and a delivery is three frames: nine system calls a message, each after a
``poll`` (the socket has a timeout while the consumer waits) and between two ``settimeout``
calls. :class:`FrameReader` gives the consumer's plain-TCP transport a ``_read`` that takes
whatever has arrived, up to :data:`CHUNK` bytes, into py-amqp's own read buffer, and hands out the
frames already there with no system call at all (the socket in blocking mode, as py-amqp leaves
it, and never asked for a byte that is not there: no wait can start). Only when no whole frame is
buffered does the consumer read the socket, with its timeout, as before.

TLS transports keep py-amqp's own reads (their decrypted bytes are buffered elsewhere).
"""

from __future__ import annotations

import errno
import select
import struct
from typing import Any

from amqp.transport import TCPTransport

#: the most one ``recv`` takes (deliveries of a prefetch window arrive together)
CHUNK = 65536

_HEADER = struct.Struct(">BHI")  #: frame type, channel, payload size; then the end octet
_AGAIN = (errno.EAGAIN, errno.EINTR)


class FrameReader:
    """The frames of one py-amqp connection: read in chunks, and those buffered handed out."""

    def __init__(self, connection: Any) -> None:
        #: py-amqp's ``Connection`` (kombu's ``connection.connection``)
        self.connection = connection
        self.transport = connection.transport
        #: whether this transport reads in chunks (plain TCP) — else py-amqp's reads, unchanged
        #: (py-amqp's private ``_quick_recv`` and ``_read_buffer``, as in 5.x; another version
        #: without them keeps its own reads)
        self.chunked = (
            type(self.transport) is TCPTransport
            and hasattr(self.transport, "_quick_recv")
            and isinstance(getattr(self.transport, "_read_buffer", None), bytes | bytearray)
        )
        if self.chunked:
            self.transport._read = self._read
        self._poll = select.poll()
        self._poll.register(self.transport.sock, select.POLLIN)

    def _read(self, n: int, initial: bool = False) -> bytes:
        """py-amqp's ``TCPTransport._read``, taking up to :data:`CHUNK` bytes a ``recv``."""
        transport = self.transport
        recv = transport._quick_recv
        buffer = transport._read_buffer
        try:
            while len(buffer) < n:
                try:
                    data = recv(max(n - len(buffer), CHUNK))
                except OSError as exc:
                    if exc.errno in _AGAIN:
                        if initial and transport.raise_on_initial_eintr:
                            raise TimeoutError() from exc
                        continue
                    raise
                if not data:
                    raise OSError("Server unexpectedly closed connection")
                buffer += data
        except BaseException:
            transport._read_buffer = buffer  # read_frame puts back what it took, in front
            raise
        result, transport._read_buffer = buffer[:n], buffer[n:]
        return result

    def has_frame(self) -> bool:
        """Return whether a whole frame is buffered (reading it makes no system call)."""
        buffer = self.transport._read_buffer
        if len(buffer) < _HEADER.size:
            return False
        size = _HEADER.unpack_from(buffer)[2]
        return len(buffer) >= _HEADER.size + size + 1

    def has_input(self) -> bool:
        """Return whether anything was read, or can be, without waiting."""
        if self.transport._read_buffer:
            return True
        pending = getattr(self.transport.sock, "pending", None)  # TLS: decrypted, not read
        if pending is not None and pending():
            return True
        return bool(self._poll.poll(0))

    def read_buffered(self) -> bool:
        """Handle buffered whole frames until one completes a method; return whether one did.

        Never waits: only frames wholly in the buffer are read (a chunked transport's).
        """
        if not self.chunked:
            return False
        connection = self.connection
        while self.has_frame():
            if connection.blocking_read(None):  # no timeout: the frame is there, no recv
                return True
        return False
