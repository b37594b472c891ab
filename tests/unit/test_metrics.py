"""Metrics: the right series move for each core action, labels stay bounded, the scrape parses
as Prometheus text, and the /metrics + /healthz endpoint answers (and refuses) as documented."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipguard import decisions as decisions_module
from sipguard import endpoint as endpoint_module
from sipguard.endpoint import MAX_HTTP_REQUEST_BYTES, answer_http
from sipguard.labels import METHODS, method_label
from sipguard.metrics import Metrics, serve_metrics
from sipguard.proxy.actions import Action, Address, Cause, Drop, Forward, Info, Reply, Transport

PEER = Address(Transport.UDP, "203.0.113.99", 5080)
TCP_PEER = Address(Transport.TCP, "2001:db8::99", 40000)
UPSTREAM = Address(Transport.UDP, "127.0.0.1", 5070)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of the scrape, parsed by prometheus_client's own parser."""
    text = metrics.scrape().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


def reply(status: int, cause: Cause, method: str = "REGISTER", **info: str) -> Reply:
    data = f"SIP/2.0 {status} Whatever\r\n\r\n".encode()
    return Reply(data, PEER, None, None, cause, Info(method=method, status=status, **info))


def forward(cause: Cause, method: str = "INVITE", trunk: str = "", status: int = 0) -> Forward:
    return Forward(
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        UPSTREAM,
        None,
        None,
        cause,
        Info(method=method, trunk=trunk, status=status),
    )


def test_challenge_moves_requests_responses_auth_and_histogram() -> None:
    m = Metrics()
    m.record_decision(reply(401, Cause.CHALLENGED), PEER, 20e-6)
    assert (
        value(
            m, "sipguard_requests_total", transport="udp", method="REGISTER", outcome="challenged"
        )
        == 1
    )
    assert value(m, "sipguard_responses_total", direction="sent", status_class="4xx") == 1
    assert value(m, "sipguard_auth_total", result="challenged") == 1
    assert value(m, "sipguard_processing_seconds_count") == 1
    assert value(m, "sipguard_processing_seconds_bucket", le="2.5e-05") == 1
    assert value(m, "sipguard_processing_seconds_bucket", le="1e-05") == 0


def test_admission_counts_per_trunk_and_auth_ok() -> None:
    m = Metrics(trunks=["acme", "globex"])
    assert ("sipguard_admitted_total", frozenset({("trunk", "globex")})) in samples(m)
    m.record_decision(forward(Cause.ADMITTED_DIGEST, trunk="acme"), PEER, 1e-4)
    m.record_decision(forward(Cause.ADMITTED_IP, trunk="acme"), PEER, 1e-4)
    assert value(m, "sipguard_admitted_total", trunk="acme") == 2
    assert value(m, "sipguard_admitted_total", trunk="globex") == 0
    assert value(m, "sipguard_auth_total", result="ok") == 1
    assert (
        value(m, "sipguard_requests_total", transport="udp", method="INVITE", outcome="admitted_ip")
        == 1
    )


@pytest.mark.parametrize(
    ("cause", "result"),
    [(Cause.STALE_NONCE, "stale"), (Cause.AUTH_FAILED, "failed")],
)
def test_auth_results(cause: Cause, result: str) -> None:
    m = Metrics()
    m.record_decision(reply(407, cause, method="INVITE"), PEER, 1e-5)
    assert value(m, "sipguard_auth_total", result=result) == 1


def test_relayed_response_is_not_a_request() -> None:
    m = Metrics()
    m.record_decision(forward(Cause.RESPONSE, method="INVITE", status=180), PEER, 1e-5)
    assert value(m, "sipguard_responses_total", direction="relayed", status_class="1xx") == 1
    assert not any(name == "sipguard_requests_total" for name, _ in samples(m))
    assert value(m, "sipguard_processing_seconds_count") == 1


def test_cancel_reply_and_forward_count_one_request() -> None:
    m = Metrics()
    m.record_decision(reply(200, Cause.CANCEL_FORWARDED, method="CANCEL"), PEER, 1e-5)
    m.record_decision(forward(Cause.CANCEL_FORWARDED, method="CANCEL"), PEER, 1e-5)
    assert (
        value(
            m,
            "sipguard_requests_total",
            transport="udp",
            method="CANCEL",
            outcome="cancel_forwarded",
        )
        == 1
    )
    assert value(m, "sipguard_responses_total", direction="sent", status_class="2xx") == 1
    assert value(m, "sipguard_processing_seconds_count") == 1


def test_dropped_responses_are_not_requests() -> None:
    m = Metrics()
    # the next hop's 200 to a CANCEL we answered ourselves, and a response with a foreign Via
    m.record_decision(Drop(Cause.CANCEL_FORWARDED, Info(method="CANCEL", status=200)), PEER, 1e-5)
    m.record_decision(Drop(Cause.STRAY, Info(method="INVITE", status=180)), PEER, 1e-5)
    assert value(m, "sipguard_responses_total", direction="dropped", status_class="2xx") == 1
    assert value(m, "sipguard_responses_total", direction="dropped", status_class="1xx") == 1
    assert not any(name == "sipguard_requests_total" for name, _ in samples(m))
    # a stray ACK (no status) is a request
    m.record_decision(Drop(Cause.STRAY, Info(method="ACK")), PEER, 1e-5)
    assert value(m, "sipguard_requests_total", transport="udp", method="ACK", outcome="stray") == 1


def test_reply_to_an_upstream_request_is_a_request() -> None:
    m = Metrics()
    m.record_decision(reply(404, Cause.FROM_UPSTREAM, method="BYE"), UPSTREAM, 1e-5)
    assert (
        value(m, "sipguard_requests_total", transport="udp", method="BYE", outcome="from_upstream")
        == 1
    )
    assert value(m, "sipguard_responses_total", direction="sent", status_class="4xx") == 1


def test_acl_denied_and_parse_error_per_transport() -> None:
    m = Metrics()
    m.record_decision(Drop(Cause.ACL_DENIED, Info(method="INVITE")), TCP_PEER, 1e-5)
    m.record_decision(Drop(Cause.PARSE_ERROR, close=True), TCP_PEER, 1e-5)
    m.record_decision(Drop(Cause.PARSE_ERROR), PEER, 1e-5)
    assert value(m, "sipguard_acl_denied_total", transport="tcp") == 1
    assert value(m, "sipguard_acl_denied_total", transport="udp") == 0
    assert value(m, "sipguard_parse_errors_total", transport="tcp") == 1
    assert value(m, "sipguard_parse_errors_total", transport="udp") == 1
    # a message whose method could not be read is counted under "other"
    assert (
        value(m, "sipguard_requests_total", transport="tcp", method="other", outcome="parse_error")
        == 1
    )


def test_trunk_limited_by_trunk_and_limit() -> None:
    m = Metrics(trunks=["acme"])
    for detail in ("calls_per_second", "calls_per_second", "concurrent_calls", "made-up"):
        info = Info(method="INVITE", trunk="acme", status=503, detail=detail)
        m.record_decision(
            Reply(b"SIP/2.0 503 x\r\n\r\n", PEER, None, None, Cause.TRUNK_LIMITED, info), PEER, 1e-5
        )
    assert value(m, "sipguard_trunk_limited_total", trunk="acme", limit="calls_per_second") == 2
    assert value(m, "sipguard_trunk_limited_total", trunk="acme", limit="concurrent_calls") == 1
    assert value(m, "sipguard_trunk_limited_total", trunk="acme", limit="other") == 1
    assert (
        value(
            m, "sipguard_requests_total", transport="udp", method="INVITE", outcome="trunk_limited"
        )
        == 4
    )


def test_trunk_calls_active_read_at_scrape_time() -> None:
    m = Metrics(trunks=["acme"])
    assert not any(name == "sipguard_trunk_calls_active" for name, _ in samples(m))
    active = {"acme": 3, "free": 0}
    m.watch_trunk_calls(lambda: active)
    assert value(m, "sipguard_trunk_calls_active", trunk="acme") == 3
    active["acme"] = 1
    assert value(m, "sipguard_trunk_calls_active", trunk="acme") == 1
    assert ("sipguard_trunk_calls_active", frozenset({("trunk", "free")})) in samples(m)


def test_status_class_comes_from_the_value_never_the_bytes() -> None:
    # The core sets info.status on every reply (issue 13: the shell parses no SIP); a reply
    # without one is "other", whatever its bytes say.
    m = Metrics()
    action = Reply(b"garbage", PEER, None, None, Cause.UPSTREAM_ERROR, Info(status=503))
    m.record_decision(action, PEER, 1e-5)
    m.record_decision(Reply(b"SIP/2.0 200 OK\r\n\r\n", PEER, None, None, Cause.BUG), PEER, 1e-5)
    assert value(m, "sipguard_responses_total", direction="sent", status_class="5xx") == 1
    assert value(m, "sipguard_responses_total", direction="sent", status_class="2xx") == 0
    assert value(m, "sipguard_responses_total", direction="sent", status_class="other") == 1


@pytest.mark.parametrize("method", ["invite", "FOO", "REGISTER\r\nX", "203.0.113.99", ""])
def test_unknown_method_is_other(method: str) -> None:
    assert method_label(method) == "other"


def test_known_methods_keep_their_name() -> None:
    assert all(method_label(m) == m for m in METHODS)


def test_labels_never_carry_peer_data() -> None:
    """Feed every cause with an IP, user, Call-ID and odd method: none may reach a label."""
    m = Metrics(trunks=["acme"])
    tainted = Info(
        method="X-203.0.113.77",
        call_id="c4ll-1d-secret@203.0.113.77",
        trunk="acme",
        user="alice-the-user",
        status=0,
        detail="from 198.51.100.5",
    )
    peers = [PEER, TCP_PEER, Address(Transport.TLS, "::ffff:198.51.100.66", 5061)]
    for peer in peers:
        for cause in Cause:
            actions: list[Action] = [
                Reply(b"SIP/2.0 403 F\r\n\r\n", peer, None, None, cause, tainted),
                Forward(
                    b"INVITE sip:203.0.113.77 SIP/2.0\r\n\r\n", peer, None, None, cause, tainted
                ),
                Drop(cause, tainted),
            ]
            for action in actions:
                m.record_decision(action, peer, 1e-5)
    text = m.scrape().decode()
    for needle in ("203.0.113", "198.51.100", "2001:db8", "c4ll-1d", "alice", "X-2"):
        assert needle not in text
    label_values = {v for _, labels in samples(m) for _, v in labels}
    assert "acme" in label_values  # the trunk name from the config is allowed


def test_trunk_series_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions_module, "MAX_TRUNK_SERIES", 2)
    m = Metrics(trunks=["a", "b"])
    m.record_decision(forward(Cause.ADMITTED_IP, trunk="c"), PEER, 1e-5)
    m.record_decision(forward(Cause.ADMITTED_IP, trunk="d"), PEER, 1e-5)
    assert value(m, "sipguard_admitted_total", trunk="other") == 2
    assert value(m, "sipguard_admitted_total", trunk="c") == 0


def test_invented_methods_keep_the_decision_cache_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer inventing a method per request: the decisions are all counted (as "other"), and
    the plans cached per kind of decision stay within MAX_PLANS."""
    monkeypatch.setattr(decisions_module, "MAX_PLANS", 8)
    m = Metrics()
    for n in range(50):
        m.record_decision(
            Reply(b"x", PEER, None, None, Cause.ACL_DENIED, Info(method=f"X{n}")), PEER, 1e-5
        )
        assert len(m._plans) <= 8
    m.record_decision(reply(401, Cause.CHALLENGED, method="INVITE"), PEER, 1e-5)
    assert (
        value(m, "sipguard_requests_total", transport="udp", method="other", outcome="acl_denied")
        == 50
    )
    assert value(m, "sipguard_acl_denied_total", transport="udp") == 50
    assert value(m, "sipguard_responses_total", direction="sent", status_class="other") == 50
    assert value(m, "sipguard_auth_total", result="challenged") == 1
    assert value(m, "sipguard_processing_seconds_count") == 51


def test_rare_events() -> None:
    m = Metrics(version="9.9.9")
    m.connection_opened("tls")
    m.connection_opened("tls")
    m.connection_closed("tls")
    m.connection_opened("sctp")  # not ours: goes to "other", no new label value
    m.upstream_error()
    m.bug()
    m.banned()
    m.config_reloaded(ok=True)
    m.config_reloaded(ok=False)
    m.config_reloaded(ok=False)
    m.log_suppressed("acl_denied")
    assert value(m, "sipguard_connections", transport="tls") == 1
    assert value(m, "sipguard_connections", transport="udp") == 0
    assert value(m, "sipguard_connections", transport="other") == 1
    assert value(m, "sipguard_upstream_errors_total") == 1
    assert value(m, "sipguard_bugs_total") == 1
    assert value(m, "sipguard_bans_total") == 1
    assert value(m, "sipguard_config_reloads_total", result="ok") == 1
    assert value(m, "sipguard_config_reloads_total", result="error") == 2
    assert value(m, "sipguard_build_info", version="9.9.9") == 1
    assert value(m, "sipguard_log_suppressed_total", event="acl_denied") == 1


def test_instances_have_separate_registries() -> None:
    a, b = Metrics(), Metrics()
    a.bug()
    assert value(a, "sipguard_bugs_total") == 1
    assert value(b, "sipguard_bugs_total") == 0


def test_every_documented_series_is_exposed() -> None:
    names = {name for name, _ in samples(Metrics(trunks=["acme"]))}
    for expected in (
        "sipguard_responses_total",
        "sipguard_auth_total",
        "sipguard_acl_denied_total",
        "sipguard_parse_errors_total",
        "sipguard_processing_seconds_bucket",
        "sipguard_connections",
        "sipguard_upstream_errors_total",
        "sipguard_config_reloads_total",
        "sipguard_build_info",
        "sipguard_bans_active",
        "sipguard_bans_total",
        "sipguard_bugs_total",
        "sipguard_admitted_total",
    ):
        assert expected in names


# -- the HTTP endpoint --------------------------------------------------------------------


def test_answer_http_routes() -> None:
    m = Metrics()
    assert answer_http(m, b"GET /metrics HTTP/1.1\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer_http(m, b"GET /metrics?x=1 HTTP/1.0\r\n").startswith(b"HTTP/1.1 200")
    assert answer_http(m, b"GET /healthz HTTP/1.1\r\n").endswith(b"\r\n\r\nok\n")
    assert answer_http(m, b"HEAD /healthz HTTP/1.1\r\n").endswith(b"\r\n\r\n")
    assert answer_http(m, b"GET / HTTP/1.1\r\n").startswith(b"HTTP/1.1 404")
    assert answer_http(m, b"POST /metrics HTTP/1.1\r\n").startswith(b"HTTP/1.1 405")
    assert answer_http(m, b"GET /metrics\r\n").startswith(b"HTTP/1.1 400")
    assert answer_http(m, b"\x16\x03\x01 x y\r\n").startswith(b"HTTP/1.1 400")


async def http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_serve_metrics_end_to_end() -> None:
    m = Metrics()
    m.record_decision(reply(401, Cause.CHALLENGED), PEER, 1e-5)
    server = await serve_metrics(m, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        answer = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Type: text/plain; version=0.0.4" in head
        assert f"Content-Length: {len(body)}".encode() in head
        families = {f.name for f in text_string_to_metric_families(body.decode())}
        assert "sipguard_requests" in families
        assert (await http(port, b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\nok\n")
        assert (await http(port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        huge = b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HTTP_REQUEST_BYTES + b"\r\n\r\n"
        assert (await http(port, huge)).startswith(b"HTTP/1.1 400")
        many = b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n"
        assert (await http(port, many)).startswith(b"HTTP/1.1 400")
        # a client that closes before sending a whole request gets an answer or nothing
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /met")
        writer.write_eof()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_serve_metrics_slow_client_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "HTTP_READ_DEADLINE", 0.2)
    server = await serve_metrics(Metrics(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
