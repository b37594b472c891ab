"""The systemd notification protocol (sd_notify), spoken directly: no libsystemd, no dependency.

Owns: `Notifier`, which sends `READY=1`, `RELOADING=1` (+ `MONOTONIC_USEC=`), `STOPPING=1`
(+ `EXTEND_TIMEOUT_USEC=`), `STATUS=...` and `WATCHDOG=1` as one datagram each to the AF_UNIX
socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the Linux abstract namespace).

Never does: raise. A notification that cannot be sent is logged by nobody and returns False: a
service manager that went away must not kill the daemon. Never blocks the event loop for long
(a send waits at most `SEND_TIMEOUT`).

Protocol: sd_notify(3) — newline-separated `VAR=value` assignments in one datagram;
systemd.service(5) `Type=notify`; `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC, µs) is
what systemd >= 253 expects to track a reload; older versions ignore fields they do not know.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Final

# The service manager reads its socket continuously; if it does not within this time, give up
# rather than stall every SIP transaction behind a notification.
SEND_TIMEOUT: Final = 0.5
# STATUS= is one line shown by `systemctl status`; keep it a line.
MAX_STATUS_CHARS: Final = 200
# Seconds a stop may take beyond `limits.shutdown_grace`, as told to the service manager
# (`stopping(needs=)`) and as the supervisor waits before it kills a worker: the server's flush
# of open connections (`server.lifecycle.CLOSE_WAIT`, 1 s) and the exit itself, with room for a
# loaded machine.
STOP_MARGIN: Final = 5.0


class Notifier:
    """Sends state changes to the service manager over `$NOTIFY_SOCKET`."""

    __slots__ = ("_address", "address")

    def __init__(self, address: str) -> None:
        """`address`: the value of NOTIFY_SOCKET (`/run/systemd/notify` or `@abstract`)."""
        self.address = address
        # sd_notify(3): a leading '@' names a socket in the abstract namespace (a leading NUL).
        self._address = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier for `$NOTIFY_SOCKET`, or None when not run by systemd (or by a service
        manager speaking a transport other than AF_UNIX, such as `vsock:`)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address.startswith(("/", "@")) or len(address) < 2:
            return None
        return cls(address)

    def send(self, *assignments: str) -> bool:
        """Send `VAR=value` assignments in one datagram; True when the datagram left."""
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(data, self._address)
        except (OSError, ValueError):
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up or reload finished: `systemctl start/reload` returns."""
        return self.send("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload begins; `ready()` must follow, also when the new config is refused."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None, *, needs: float | None = None) -> bool:
        """The shutdown begins. `needs`: seconds it may take; systemd then waits at least that
        long before it kills (EXTEND_TIMEOUT_USEC=, systemd >= 236), whatever TimeoutStopSec=
        says, so a long `limits.shutdown_grace` is not cut short by the unit file."""
        extend = () if needs is None else (f"EXTEND_TIMEOUT_USEC={round(needs * 1e6)}",)
        return self.send("STOPPING=1", *extend, *_status(status))

    def status(self, text: str) -> bool:
        return self.send(*_status(text))

    def watchdog(self) -> bool:
        """Keep-alive for `WatchdogSec=` (not enabled in the shipped unit)."""
        return self.send("WATCHDOG=1")

    def __repr__(self) -> str:
        return f"Notifier({self.address!r})"


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    line = " ".join(text.split())  # one line: a newline would start a new assignment
    return (f"STATUS={line[:MAX_STATUS_CHARS]}",)
