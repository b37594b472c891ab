"""A source's plan (`admission.plan_for`, issue 13): what the config implies for one source
address, derived once per address and config and kept in `Config.plans`; the decisions it
feeds are the playbook tests'. Here: what it holds, that it is kept, bounded and dropped with
the config."""

from __future__ import annotations

from sipguard.policy.whitelist import parse_rules
from sipguard.proxy import admission
from sipguard.settings import Trunk
from tests.unit.proxy.playbook import CLIENT, LOCAL, NOW, STRANGER, alice, core, request, settings

LOCALHOST = parse_rules(("127.0.0.1",))


def test_plan_of_a_source_whose_only_trunk_needs_digest() -> None:
    c = core(
        settings(
            Trunk("acme", whitelist=LOCALHOST, credentials=(alice(),), algorithms=("SHA-256",)),
            algorithms=("MD5",),
        )
    )
    plan = admission.plan_for(c._config, CLIENT.host)
    assert [t.name for t in plan.trunks] == ["acme"]
    assert plan.ip_trunk is None
    assert plan.algorithms == ("SHA-256",)
    assert plan.names is None  # every trunk holding credentials is a candidate: no filter
    assert plan.throttled is False  # a whitelist names the source: its trunk limits it
    assert admission.plan_for(c._config, CLIENT.host) is plan  # kept


def test_plan_names_the_candidate_trunks_when_others_hold_credentials() -> None:
    other = Trunk("other", whitelist=parse_rules(("10.0.0.1",)), credentials=(alice(),))
    opened = Trunk("open", credentials=(alice(),), algorithms=("SHA-256", "MD5"))
    c = core(settings(other, opened, algorithms=("MD5",)))
    plan = admission.plan_for(c._config, CLIENT.host)
    assert [t.name for t in plan.trunks] == ["open"]
    assert plan.names == frozenset({"open"})
    assert plan.algorithms == ("SHA-256", "MD5")
    assert plan.throttled is True  # only an open trunk admits it: the anonymous bucket


def test_plan_of_a_source_admitted_by_address() -> None:
    ip = Trunk("office", whitelist=LOCALHOST)
    c = core(settings(Trunk("acme", credentials=(alice(),)), ip))
    plan = admission.plan_for(c._config, CLIENT.host)
    assert plan.ip_trunk is ip
    assert not admission.plan_for(c._config, STRANGER.host).ip_trunk


def test_plans_are_bounded_and_dropped_with_the_config() -> None:
    c = core(settings(Trunk("office", whitelist=LOCALHOST)))
    c.handle(request("INVITE"), CLIENT, LOCAL, None, NOW)
    assert CLIENT.host in c._config.plans
    for n in range(admission._PLANS_SIZE + 1):
        admission.plan_for(c._config, f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert len(c._config.plans) <= admission._PLANS_SIZE
    assert CLIENT.host not in c._config.plans  # cleared when full
    c.reconfigure(settings(Trunk("office", whitelist=parse_rules(("10.0.0.0/8",)))))
    assert c._config.plans == {}
    assert admission.plan_for(c._config, CLIENT.host).trunks == ()
