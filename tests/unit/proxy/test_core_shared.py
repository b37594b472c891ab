"""Playbook tests of the core with shared state (DESIGN §7, issue 15): the questions it leaves
in `Core.questions` instead of awaiting, how it resumes with each answer, and the ban view the
shell keeps in sync (`shared_failures`, `apply_ban`)."""

from __future__ import annotations

import dataclasses

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import AskNonceCount, Cause, Drop, Forward, Reply, ShareFailure
from sipguard.proxy.core import Core
from sipguard.settings import Settings, StateSettings
from tests.unit.proxy.playbook import (
    CLIENT,
    LOCAL,
    NOW,
    answer,
    challenge,
    core,
    digest_trunk,
    only,
    request,
    settings,
    status_of,
    with_auth,
)

IP = CLIENT.host


def shared(on_error: str = "local") -> Settings:
    state = StateSettings(backend="redis", on_error=on_error)
    return dataclasses.replace(settings(digest_trunk()), state=state)


def answered(c: Core, password: str = "s3cret") -> bytes:
    params = challenge(only(c.handle(request(), CLIENT, LOCAL, None, NOW)))
    return with_auth(
        request(cseq=2), "Authorization", answer(params, "REGISTER", password=password)
    )


def ask(c: Core, data: bytes, now: float = NOW + 1) -> AskNonceCount:
    assert c.handle(data, CLIENT, LOCAL, None, now) == []
    (question,) = c.questions
    c.questions.clear()
    assert isinstance(question, AskNonceCount)
    return question


def test_memory_backend_asks_nothing() -> None:
    c = core(settings(digest_trunk()))
    action = only(c.handle(answered(c), CLIENT, LOCAL, None, NOW + 1))
    assert isinstance(action, Forward) and action.cause is Cause.ADMITTED_DIGEST
    assert c.questions == []


def test_shared_nonce_count_asked_then_admitted() -> None:
    c = core(shared())
    question = ask(c, answered(c))
    assert question.nonce_count == 1 and question.expires_at > NOW
    action = only(question.resume(True, NOW + 1.001))
    assert isinstance(action, Forward) and action.cause is Cause.ADMITTED_DIGEST
    assert c.questions == []


def test_nonce_count_replay_seen_by_another_instance_is_refused() -> None:
    c = core(shared())
    question = ask(c, answered(c))
    action = only(question.resume(False, NOW + 1.001))
    assert action.cause is Cause.AUTH_FAILED and action.info.detail == "nonce-count replayed"
    (note,) = c.questions
    assert note == ShareFailure(IP, 60.0, None, 0.0)


def test_retransmission_after_admission_is_forwarded_without_asking() -> None:
    c = core(shared())
    data = answered(c)
    first = only(ask(c, data).resume(True, NOW + 1))
    again = only(c.handle(data, CLIENT, LOCAL, None, NOW + 1.5))
    assert isinstance(first, Forward) and isinstance(again, Forward)
    assert again.data == first.data
    assert c.questions == []


def test_state_unavailable_local_decides_on_the_local_view() -> None:
    c = core(shared("local"))
    data = answered(c)
    assert isinstance(only(ask(c, data).resume(None, NOW + 1)), Forward)
    replay = data.replace(b"z9hG4bK-client-1", b"z9hG4bK-client-9")  # not a retransmission
    action = only(ask(c, replay, NOW + 2).resume(None, NOW + 2))
    assert action.cause is Cause.AUTH_FAILED


def test_state_unavailable_refuse_answers_503_and_counts_nothing() -> None:
    c = core(shared("refuse"))
    action = only(ask(c, answered(c)).resume(None, NOW + 1))
    assert status_of(action) == 503 and action.cause is Cause.STATE_ERROR
    assert c.questions == []


def test_wrong_answer_shares_the_failure_and_kills_the_nonce_everywhere() -> None:
    c = core(shared())
    action = only(c.handle(answered(c, "wrong"), CLIENT, LOCAL, None, NOW + 1))
    assert action.cause is Cause.AUTH_FAILED
    (note,) = c.questions
    assert isinstance(note, ShareFailure) and note.ip == IP and note.nonce is not None
    assert note.nonce_expires_at > NOW


def test_never_ban_source_is_not_banned_by_the_shared_count() -> None:
    s = shared()
    protection = dataclasses.replace(s.protection, never_ban=parse_rules((IP,)))
    c = core(dataclasses.replace(s, protection=protection))
    assert c.shared_failures(IP, 50, NOW) is None
    assert c.apply_ban(IP, NOW + 60, NOW) is None


def test_shared_failure_count_bans_and_banned_source_is_dropped_without_asking() -> None:
    c = core(shared())
    data = answered(c)
    assert c.shared_failures(IP, 4, NOW) is None
    ban = c.shared_failures(IP, 5, NOW)
    assert ban is not None and ban.ip == IP and ban.until == NOW + 600
    # decided, not placed: the ban applies when heard back from the shared state
    assert isinstance(only(c.handle(request(), CLIENT, LOCAL, None, NOW)), Reply)
    assert c.apply_ban(ban.ip, ban.until, NOW) is not None
    again = c.shared_failures(IP, 6, NOW)  # already banned: the same ban, to publish again
    assert again is not None and again.until == ban.until
    assert c.apply_ban(again.ip, again.until, NOW) is None
    action = only(c.handle(data, CLIENT, LOCAL, None, NOW + 1))
    assert isinstance(action, Drop) and action.cause is Cause.BANNED
    assert c.questions == []


def test_ban_heard_from_another_instance_applies_once() -> None:
    c = core(shared())
    event = c.apply_ban(IP, NOW + 30, NOW)
    assert event is not None and event.until == NOW + 30
    assert c.apply_ban(IP, NOW + 30, NOW + 1) is None  # our own ban, heard back
    assert c.apply_ban(IP, NOW + 32, NOW + 1) is None  # the same ban decided elsewhere
    assert c.apply_ban("192.0.2.1", NOW - 1, NOW) is None  # already over
    assert only(c.handle(request(), CLIENT, LOCAL, None, NOW + 2)).cause is Cause.BANNED
    assert only(c.handle(request(), CLIENT, LOCAL, None, NOW + 31)).cause is Cause.CHALLENGED


def test_a_ban_by_the_local_count_is_published_too() -> None:
    """An outage can make the shared count miss failures: the ban the local count places is
    handed to the shell as well (`ShareFailure.ban_until`), so it still reaches the others."""
    c = core(shared())
    notes = []
    for i in range(5):
        action = only(c.handle(answered(c, "wrong"), CLIENT, LOCAL, None, NOW + 1 + i))
        assert action.cause is Cause.AUTH_FAILED
        notes += [q for q in c.questions if isinstance(q, ShareFailure)]
        c.questions.clear()
    assert [n.ban_until > 0 for n in notes] == [False, False, False, False, True]
    assert notes[-1].ban_until == NOW + 5 + 600
