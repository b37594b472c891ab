"""The Redis wire over a recording transport: every command of one loop turn leaves in one write,
replies (whole, split or several per chunk) reach their callbacks in order and never from inside
`call`, commands asked before the connection is handed over leave once it is, and a lost
connection or a server that does not answer in time answers every waiter `LOST`."""

from __future__ import annotations

import asyncio
from typing import Any

from sipguard.state.wire import LOST, ReplyError, Wire, pack


class Recorder(asyncio.Transport):
    """A transport that keeps what is written and can be closed once."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.protocol: Any = None
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def close(self) -> None:
        self.closed = True


async def turn() -> None:
    for _ in range(3):  # the flush is scheduled from a callback: let it and its follow-ups run
        await asyncio.sleep(0)


def test_pack_is_resp() -> None:
    assert pack(b"SET", "k", 12) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"


async def test_one_write_per_loop_turn_and_replies_in_order() -> None:
    wire, transport = Wire(timeout=5.0), Recorder()
    wire.take_over(transport)
    heard: list[Any] = []
    for i in range(3):
        wire.call(pack(b"INCR", f"k{i}"), heard.append)
    assert heard == []  # never from inside `call`
    await turn()
    assert transport.writes == [pack(b"INCR", "k0") + pack(b"INCR", "k1") + pack(b"INCR", "k2")]
    wire.data_received(b":1\r\n:2")  # a reply split across two chunks
    assert heard == [1]
    wire.data_received(b"\r\n-NOSCRIPT No matching script\r\n")
    assert heard[:2] == [1, 2]
    assert isinstance(heard[2], ReplyError) and str(heard[2]).startswith("NOSCRIPT")
    wire.call(pack(b"GET", "k"), heard.append)
    await turn()
    assert len(transport.writes) == 2  # the next turn: a write of its own


async def test_commands_asked_before_the_connection_leave_once_it_is_handed_over() -> None:
    wire, transport = Wire(timeout=5.0), Recorder()
    heard: list[Any] = []
    wire.call(pack(b"PING"), heard.append)
    await turn()
    wire.take_over(transport)
    await turn()
    assert transport.writes == [pack(b"PING")]
    wire.data_received(b"+PONG\r\n")
    assert heard == [b"PONG"]


async def test_lost_connection_answers_every_waiter_lost() -> None:
    wire, transport = Wire(timeout=5.0), Recorder()
    wire.take_over(transport)
    heard: list[Any] = []
    wire.call(pack(b"PING"), heard.append)
    wire.call(pack(b"PING"), heard.append)
    await turn()
    wire.connection_lost(ConnectionResetError())
    assert heard == []  # answered from the loop
    await turn()
    assert heard == [LOST, LOST] and wire.closed
    wire.call(pack(b"PING"), heard.append)  # a closed wire answers at once, without writing
    await turn()
    assert heard == [LOST, LOST, LOST] and len(transport.writes) == 1


async def test_unanswered_write_times_out_and_closes() -> None:
    wire, transport = Wire(timeout=0.05), Recorder()
    wire.take_over(transport)
    heard: list[Any] = []
    wire.call(pack(b"PING"), heard.append)
    await asyncio.wait_for(_until(lambda: heard), 2.0)
    assert heard == [LOST] and transport.closed and wire.closed


async def test_answered_writes_keep_the_wire_open_past_the_timeout() -> None:
    wire, transport = Wire(timeout=0.05), Recorder()
    wire.take_over(transport)
    heard: list[Any] = []
    for _ in range(4):
        wire.call(pack(b"PING"), heard.append)
        await turn()
        wire.data_received(b"+PONG\r\n")
        await asyncio.sleep(0.03)
    assert heard == [b"PONG"] * 4 and not wire.closed and not transport.closed


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)  # polling interval, bounded by the caller's wait_for
