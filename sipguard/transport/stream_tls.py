"""Server-side TLS of one inbound stream connection, on memory BIOs (RFC 3261 §26.3.1).

Owns: `MemoryTls` (an `ssl.SSLObject` between two `ssl.MemoryBIO`s: the handshake, decrypting
what the peer sent, encrypting what we send, close_notify) and `Ending`, how a read ended.
Memory BIOs give the same code on asyncio and uvloop, and let the connection caps apply before
any TLS work (`loop.start_tls` cannot: uvloop delivers the ClientHello to the plain protocol
before it could be called).

Never does: touch a socket, a timer or the connection's state: it returns the records to write
and how a read ended, and `transport.stream` decides what follows.
"""

from __future__ import annotations

import contextlib
import enum
import ssl

__all__ = ["Ending", "MemoryTls"]

READ_SIZE = 65536  # plaintext bytes asked of the TLS object at a time


class Ending(enum.Enum):
    """How a read of the plaintext ended."""

    MORE = "more"  # nothing more to read for now: the connection goes on
    CLOSED = "closed"  # the peer's close_notify (RFC 8446 §6.1)
    BROKEN = "broken"  # a TLS error: nothing more can be read


class MemoryTls:
    """TLS on memory BIOs for one inbound connection (server side)."""

    __slots__ = ("_incoming", "_object", "_outgoing")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def receive(self, data: bytes) -> None:
        """Bytes from the socket, for the next handshake step or read."""
        self._incoming.write(data)

    def handshake(self) -> bool | None:
        """One handshake step: True when done, False when more bytes are needed, None when it
        failed (a refused protocol version or cipher, a bad client certificate, noise). The
        records to send (an alert too) are in `records()`."""
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except (ssl.SSLError, OSError):
            return None
        return True

    def read(self) -> tuple[bytes, Ending]:
        """Every byte of plaintext the records received so far hold, and how the read ended."""
        tls = self._object
        chunks: list[bytes] = []
        ending = Ending.MORE
        while True:
            try:
                chunk = tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                ending = Ending.CLOSED
                break
            except ssl.SSLError:
                return b"", Ending.BROKEN
            if not chunk:
                break
            chunks.append(chunk)
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), ending

    def write(self, data: bytes) -> None:
        """Encrypt `data`; its records are in `records()`."""
        self._object.write(data)

    def close_notify(self) -> None:
        """Our close_notify (RFC 8446 §6.1); its record is in `records()`."""
        with contextlib.suppress(ssl.SSLError):
            self._object.unwrap()

    def records(self) -> bytes:
        """The TLS records waiting to be written to the socket (b"" when none)."""
        outgoing = self._outgoing
        return outgoing.read() if outgoing.pending else b""
