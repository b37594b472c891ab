"""Logs: JSON lines with a stable shape, secrets redacted, untrusted values bounded and unable to
forge a line (JSON and console), and a broken stdout never raising into the daemon."""

from __future__ import annotations

import io
import re
from typing import IO, Any, cast

import orjson
import pytest

from sipguard.logs import CAPS, REDACTED, clean_text, configure_logging, is_secret_key

FORGED = '\r\n{"event":"admitted","src_ip":"6.6.6.6"}\r\n'


def json_lines(buffer: io.BytesIO) -> list[dict[str, Any]]:
    raw = buffer.getvalue()
    assert raw.endswith(b"\n")
    return [orjson.loads(line) for line in raw.splitlines()]


def test_json_line_shape() -> None:
    out = io.BytesIO()
    log = configure_logging("info", "json", out)
    log.info("admitted", src_ip="192.0.2.1", src_port=5060, transport="udp", status=200)
    (line,) = json_lines(out)
    assert list(line)[:3] == ["timestamp", "level", "event"]
    assert line["event"] == "admitted"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")  # ISO 8601, UTC
    assert line["src_ip"] == "192.0.2.1"
    assert line["src_port"] == 5060


def test_level_filter() -> None:
    out = io.BytesIO()
    log = configure_logging("warning", "json", out)
    log.debug("in_dialog")
    log.info("admitted")
    log.warning("auth_failed")
    log.error("bug")
    assert [line["event"] for line in json_lines(out)] == ["auth_failed", "bug"]


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "ha1",
        "secret",
        "authorization",
        "Proxy-Authorization",
        "response",
        "digest_response",
        "nonce_key",
        "db_password",
        "token",
    ],
)
def test_secret_keys_are_redacted(key: str) -> None:
    out = io.BytesIO()
    configure_logging("info", "json", out).info("x", **{key: "hunter2-secret-value"})
    (line,) = json_lines(out)
    assert line[key] == REDACTED
    assert b"hunter2" not in out.getvalue()


@pytest.mark.parametrize("key", ["user", "status", "call_id", "responses", "cause", "trunk"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)


def test_secrets_inside_values_and_containers_are_redacted() -> None:
    out = io.BytesIO()
    authorization = (
        'Digest username="alice", realm="sipguard.test", nonce="abc", uri="sip:x",'
        ' response="6629fae49393a05397450978507c4ef1", algorithm=MD5'
    )
    configure_logging("info", "json", out).info(
        "auth_failed",
        detail=f"bad answer: {authorization}",
        extra={"ha1": "0123abcd", "nested": [{"password": "p4ss"}], "ok": "fine"},
        note="password=p4ss; ha1=0123abcd",
    )
    text = out.getvalue()
    for secret in (b"6629fae4", b"0123abcd", b"p4ss"):
        assert secret not in text
    (line,) = json_lines(out)
    assert 'username="alice"' in line["detail"]  # the username is not a secret
    assert line["extra"]["ok"] == "fine"
    assert line["extra"]["ha1"] == REDACTED


def test_crlf_call_id_cannot_forge_a_json_line() -> None:
    out = io.BytesIO()
    configure_logging("info", "json", out).info("admitted", src_ip="192.0.2.1", call_id=FORGED)
    lines = json_lines(out)
    assert len(lines) == 1
    assert lines[0]["src_ip"] == "192.0.2.1"
    assert "\r" not in lines[0]["call_id"] and "\n" not in lines[0]["call_id"]
    assert lines[0]["call_id"].startswith("\\x0d\\x0a")


def test_crlf_call_id_cannot_forge_a_console_line() -> None:
    out = io.StringIO()
    configure_logging("info", "console", out).info(
        "admitted", src_ip="192.0.2.1", call_id=FORGED + "\x1b[2J\u2028\x85"
    )
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r" not in text and "\x1b" not in text and "\u2028" not in text
    assert "\x85" not in text
    assert "x0d" in text and "x1b" in text  # escaped (the console renderer may repr it again)


def console_line(**fields: Any) -> str:
    out = io.StringIO()
    event = fields.pop("event")
    configure_logging("debug", "console", out).warning(event, **fields)
    (line,) = out.getvalue().splitlines()
    stamp, _, rest = line.partition("Z ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", stamp), stamp
    return rest


DECISION: dict[str, Any] = {
    "src_ip": "192.0.2.1",
    "src_port": 5060,
    "transport": "udp",
    "cause": "admitted_digest",
    "action": "forward",
    "method": "INVITE",
    "call_id": "a84b4c76e66710@pc33.atlanta.example.com",
    "trunk": "carrier-a",
    "user": "alice",
    "dst_ip": "10.0.0.5",
    "dst_port": 5060,
}


def test_console_line_puts_event_peer_and_outcome_first() -> None:
    line = console_line(event="admitted", **DECISION)
    assert line == (
        "warning admitted     192.0.2.1:5060/udp forward->10.0.0.5:5060 INVITE trunk=carrier-a"
        " user=alice cause=digest call_id=a84b4c76e66710@pc33.atlanta.example.com"
    )
    assert len("2026-12-02 05:58:29.960Z " + line) == 182  # the renderer before: 271


def test_console_line_leaves_out_a_cause_that_repeats_the_event() -> None:
    fields = {**DECISION, "cause": "auth_failed", "action": "reply", "status": 403}
    del fields["dst_ip"], fields["dst_port"]
    line = console_line(event="auth_failed", detail="wrong password", **fields)
    assert line.startswith("warning auth_failed  192.0.2.1:5060/udp reply 403 INVITE ")
    assert "cause" not in line and "auth_failed" not in line.partition(" ")[2][12:]
    assert 'detail="wrong password"' in line
    assert line.endswith(" call_id=a84b4c76e66710@pc33.atlanta.example.com")


def test_console_peer_of_ipv6_and_closed_drop() -> None:
    line = console_line(
        event="acl_denied",
        src_ip="2001:db8::1",
        src_port=5061,
        transport="tls",
        cause="acl_denied",
        action="drop",
        closed=True,
    )
    assert line == "warning acl_denied   [2001:db8::1]:5061/tls drop+close"


def test_console_lifecycle_fields_keep_their_order() -> None:
    line = console_line(
        event="started", listeners=["udp://127.0.0.1:5060", "tls://[::1]:5061"], version="1"
    )
    assert line == "warning started      listeners=udp://127.0.0.1:5060,tls://[::1]:5061 version=1"


def test_console_traceback_lines_are_indented() -> None:
    out = io.StringIO()
    log = configure_logging("info", "console", out)
    try:
        raise RuntimeError("boom\n2026-01-01 00:00:00.000Z info    admitted forged")
    except RuntimeError as exc:
        log.error("bug", exc_type="RuntimeError", exc_info=exc)
    first, *rest = out.getvalue().splitlines()
    assert " error   bug          exc_type=RuntimeError" in first
    assert rest and all(line.startswith("    ") for line in rest)
    assert rest[-2].strip() == "RuntimeError: boom"  # the forged line stays indented


def test_long_values_are_truncated() -> None:
    out = io.BytesIO()
    configure_logging("info", "json", out).info("admitted", call_id="c" * 5000, detail="d" * 9000)
    (line,) = json_lines(out)
    assert line["call_id"].startswith("c" * CAPS["call_id"] + "...")
    assert len(line["call_id"]) < CAPS["call_id"] + 32
    assert len(line["detail"]) < CAPS["detail"] + 32


def test_bytes_and_odd_values_are_rendered_safely() -> None:
    out = io.BytesIO()
    configure_logging("info", "json", out).info(
        "x", raw=b"INVITE\r\n\xff", obj=object(), items=list(range(1000)), none=None, flag=True
    )
    (line,) = json_lines(out)
    assert line["raw"] == "INVITE\\x0d\\x0a\\xff"
    assert line["obj"].startswith("<object object")
    assert len(line["items"]) == 64
    assert line["none"] is None and line["flag"] is True


def test_traceback_has_no_locals() -> None:
    out = io.BytesIO()
    log = configure_logging("info", "json", out)

    def check(password: str) -> None:
        raise RuntimeError("boom")

    secret = "".join(["hun", "ter2"])  # not in the source lines the traceback quotes
    try:
        check(secret)
    except RuntimeError as exc:
        log.error("bug", exc_info=exc)
    (line,) = json_lines(out)
    assert "RuntimeError: boom" in line["exception"]
    assert "hunter2" not in out.getvalue().decode()


def test_auto_format_is_json_when_not_a_terminal() -> None:
    out = io.BytesIO()
    configure_logging("info", "auto", out).info("started")
    assert json_lines(out)[0]["event"] == "started"


def test_text_stream_receives_json() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out).info("started", version="1")
    assert orjson.loads(out.getvalue())["version"] == "1"


def test_binary_stream_receives_console() -> None:
    out = io.BytesIO()
    configure_logging("info", "console", out).info("started", version="1")
    assert b"started" in out.getvalue()


class Broken(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise BrokenPipeError("journald went away")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_broken_stdout_never_raises(fmt: str) -> None:
    log = configure_logging("info", fmt, cast(IO[bytes], Broken()))
    log.info("admitted", src_ip="192.0.2.1")  # must not raise


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        configure_logging("verbose", "json", io.BytesIO())
    with pytest.raises(ValueError, match="format"):
        configure_logging("info", "xml", io.BytesIO())


def test_clean_text_leaves_ordinary_text_alone() -> None:
    assert clean_text("a1b2c3@192.0.2.1 — ünïcode") == "a1b2c3@192.0.2.1 — ünïcode"
    assert clean_text("tab\there") == "tab\\x09here"
