"""Between the core and the shared state: the questions the core leaves, the bans it hears.

Owns: `StateBridge`, which the server creates when `state.backend` is shared. After every call
into the core the dispatcher calls `drain(source, connection)`: each `AskNonceCount` is asked of
the shared state (batched by the backend, answered through a callback: no task per question)
and resumed in the core with the answer (the resumed
actions run through the dispatcher like any others, with the broad except around them); each
`ShareFailure` is counted in the shared window, and the ban the core decides on that count is
published. Bans heard from the shared state (any instance, this one included) go to
`core.apply_ban`, and a new one is reported to the observer; unbans heard go to `core.unban`
(an operator's ban or unban on any instance is published through `publish_ban`/`publish_unban`).
Every CALLS_SYNC (a task of its own) this instance's calls in progress per capped trunk are
stored in the shared state and the others' sums handed to the core (`core.set_remote_calls`):
the core decides on that local view, at most ~1 s old, and never waits for Redis on an INVITE.
Outages are reported as they begin and end; the failed calls are counted for
`sipguard_state_errors_total`.

Never does: SIP decisions (the core makes them from the answers), wait for the shared state on
the path of a message (at most MAX_IN_FLIGHT questions wait at once, beyond which a question is
answered "unavailable" at once, as during an outage).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Final, Protocol

from sipguard.policy.guard import UnbanEvent
from sipguard.proxy.actions import Address, AskNonceCount, BanEvent, Question, ShareFailure
from sipguard.state.interface import SharedState

# Questions waiting for the shared state at once (each ~0.1-1 ms): beyond this the state cannot
# keep up and the core decides as during an outage (state.on_error).
MAX_IN_FLIGHT: Final = 4096
# Seconds between two exchanges of the calls in progress per trunk (a count is at most this old
# when stored and read at most this much later: the view lags by ~2 x CALLS_SYNC), and how long
# an instance's count lives without a refresh (a stopped or cut-off instance's stop counting).
CALLS_SYNC: Final = 0.5
CALLS_TTL: Final = 3.0

Run = Callable[..., None]  # dispatcher.complete(source, connection, func, *args)


class QuestionCore(Protocol):
    questions: list[Question]

    def shared_failures(self, ip: str, count: int, now: float) -> BanEvent | None: ...

    def apply_ban(self, ip: str, until: float, now: float) -> BanEvent | None: ...

    def unban(self, ip: str) -> UnbanEvent | None: ...

    def shared_calls(self) -> dict[str, int]: ...

    def set_remote_calls(self, counts: dict[str, int]) -> None: ...


class StateObserver(Protocol):
    def banned(self, event: Any) -> None: ...

    def state_outage(self, operation: str, detail: str) -> None: ...

    def state_errors(self, count: int) -> None: ...


class StateBridge:
    def __init__(
        self, state: SharedState, core: QuestionCore, run: Run, observer: StateObserver
    ) -> None:
        self.state = state
        self.core = core
        self._run = run
        self._observer = observer
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors_seen = 0
        self._asked = 0  # nonce-counts asked and not answered yet
        self._instance = os.urandom(8).hex()  # this process among the others (calls:TRUNK)

    async def start(self) -> None:
        await self.state.start(self._heard_ban, self._observer.state_outage)
        self._spawn(self._calls_forever())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        await self.state.close()

    def drain(self, source: Address, connection: int | None) -> None:
        """Take the core's questions (called after every call into the core)."""
        questions = self.core.questions
        if not questions:
            return
        taken = questions[:]
        questions.clear()
        for question in taken:
            if isinstance(question, AskNonceCount):
                self._ask(question, source, connection)
                continue
            if len(self._tasks) >= MAX_IN_FLIGHT:
                continue
            task = asyncio.get_running_loop().create_task(
                self._answer(question, source, connection)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _ask(self, question: AskNonceCount, source: Address, connection: int | None) -> None:
        """No task per question: the backend batches the counts and calls back."""
        if self._asked >= MAX_IN_FLIGHT:
            self._resume(question, source, connection, None)
            return
        self._asked += 1
        ttl = question.expires_at - time.time()
        then = partial(self._answered, question, source, connection)
        self.state.count_nonce_then(question.nonce, question.nonce_count, ttl, then)

    def _answered(
        self, question: AskNonceCount, source: Address, connection: int | None, answer: bool | None
    ) -> None:
        self._asked -= 1
        self._count_errors()
        self._resume(question, source, connection, answer)

    async def _answer(self, question: Question, source: Address, connection: int | None) -> None:
        if isinstance(question, ShareFailure):
            await self._share_failure(question)

    def _resume(
        self, question: AskNonceCount, source: Address, connection: int | None, answer: bool | None
    ) -> None:
        self._run(source, connection, question.resume, answer, time.time())
        self.drain(source, connection)  # the resumed decision may note a failure

    async def _share_failure(self, failure: ShareFailure) -> None:
        if failure.ban_until:
            await self.state.publish_ban(failure.ip, failure.ban_until)
        if failure.nonce is not None:
            await self.state.kill_nonce(failure.nonce, failure.nonce_expires_at - time.time())
        count = await self.state.add_failure(failure.ip, failure.window)
        if count is not None:
            ban = self.core.shared_failures(failure.ip, count, time.time())
            if ban is not None:
                await self.state.publish_ban(ban.ip, ban.until)
        self._count_errors()

    def _heard_ban(self, ip: str, until: float) -> None:
        # an unban (until 0) is None on the instance that lifted it already
        event: BanEvent | UnbanEvent | None = (
            self.core.unban(ip) if until <= 0 else self.core.apply_ban(ip, until, time.time())
        )
        if event is not None:
            self._observer.banned(event)

    def publish_ban(self, ip: str, until: float) -> None:
        """An operator's ban, placed here already: tell every other instance."""
        self._spawn(self._publish(self.state.publish_ban(ip, until)))

    def publish_unban(self, ip: str) -> None:
        """An operator's unban, lifted here already: lift it on every other instance."""
        self._spawn(self._publish(self.state.publish_unban(ip)))

    async def _calls_forever(self) -> None:
        """Every CALLS_SYNC: share this instance's calls in progress, hand the others' to the
        core. While the state is unavailable the last view stays for CALLS_TTL (as this
        instance's count stays for the others), then the others count as none: the cap is
        enforced per instance until the state answers again."""
        heard = time.monotonic()
        while True:
            await asyncio.sleep(CALLS_SYNC)
            others = await self.state.share_calls(
                self._instance, self.core.shared_calls(), CALLS_TTL
            )
            if others is not None:
                heard = time.monotonic()
                self.core.set_remote_calls(others)
            elif time.monotonic() - heard > CALLS_TTL:
                self.core.set_remote_calls({})
            self._count_errors()

    async def _publish(self, call: Awaitable[bool]) -> None:
        await call
        self._count_errors()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count_errors(self) -> None:
        errors = self.state.errors
        if errors > self._errors_seen:
            self._observer.state_errors(errors - self._errors_seen)
            self._errors_seen = errors
