"""Properties of the core: whatever the bytes and the peer, `handle` returns actions and never
raises (DESIGN §2: an exception escaping the core is a defect)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy.actions import Address, Drop, Forward, Reply, Transport
from sipguard.proxy.core import Core
from sipguard.settings import Trunk
from tests.conftest import CORPORA
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, STRANGER, UPSTREAM, alice, core
from tests.unit.proxy.playbook import settings as make_settings

SETTINGS = make_settings(
    Trunk("office", whitelist=parse_rules(("127.0.0.1",))),
    Trunk("remote", credentials=(alice(),), algorithms=("SHA-256", "MD5")),
)


def fresh() -> Core:
    """A new core for each example: no state (dialogs, nonce counts, bans, rate buckets) left by
    one example decides another, so a failure replays from its example alone."""
    return core(SETTINGS)


PEERS = [CLIENT, STRANGER, UPSTREAM, Address(Transport.TCP, "::1", 40000)]


def _corpus() -> list[bytes]:
    files = sorted(Path(CORPORA, "rfc4475").glob("*.dat")) + sorted(
        Path(CORPORA, "rfc5118", "wire").glob("*.dat")
    )
    return [f.read_bytes() for f in files]


CORPUS = _corpus()


def _check(actions: Sequence[object]) -> None:
    assert isinstance(actions, list)
    for action in actions:
        assert isinstance(action, Reply | Forward | Drop)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000), peer=st.sampled_from(PEERS))
def test_core_never_raises_on_arbitrary_bytes(data: bytes, peer: Address) -> None:
    _check(fresh().handle(data, peer, LOCAL, None, NOW))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(CORPUS) - 1),
    cuts=st.lists(
        st.tuples(st.integers(min_value=0, max_value=4000), st.binary(max_size=12)),
        max_size=4,
    ),
    peer=st.sampled_from(PEERS),
)
def test_core_never_raises_on_mutated_corpus(
    index: int, cuts: list[tuple[int, bytes]], peer: Address
) -> None:
    data = bytearray(CORPUS[index])
    for offset, junk in cuts:
        at = offset % (len(data) + 1)
        data[at : at + len(junk)] = junk
    _check(fresh().handle(bytes(data), peer, LOCAL, None, NOW))


def test_every_corpus_message_from_every_peer() -> None:
    for data in CORPUS:
        for peer in PEERS:
            _check(fresh().handle(data, peer, LOCAL, None, NOW))
