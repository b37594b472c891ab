"""The config loader: every problem reported as `FILE: key.path: message`, YAML traps, secrets."""

# ruff: noqa: E501  (table rows: one config edit and one exact message per line)

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipguard.config import load_settings, load_settings_with_warnings
from sipguard.errors import ConfigError
from sipguard.policy.whitelist import SourceMatcher, parse_rule, parse_rules
from sipguard.settings import Credential, Limits, Listener, Protection, Upstream

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 6, 1, tzinfo=UTC)

BASE = """\
listen: [udp://127.0.0.1:5060]
upstream: [sip:127.0.0.1:5070]
auth:
  realm: sipguard.test
trunks:
  - name: demo
    whitelist: [127.0.0.1]
    credentials:
      - {username: alice, password: s3cret}
"""

Write = Callable[..., str]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(text: str, name: str = "sipguard.yaml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        path.chmod(0o600)  # it holds passwords: private, as the README asks
        return str(path)

    return _write


def problems_of(path: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_settings_with_warnings(path, environ=environ or {}, now=NOW)
    return exc.value.problems


def replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


def test_example_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "sipguard.yaml"  # installed as the README says: mode 0640
    path.write_bytes((ROOT / "config" / "sipguard.example.yaml").read_bytes())
    path.chmod(0o640)
    settings, warnings = load_settings_with_warnings(str(path), environ={}, now=NOW)
    assert [listener.url for listener in settings.listen] == [
        "udp://127.0.0.1:5060",
        "tcp://127.0.0.1:5060",
        "udp://[::1]:5060",
        "tcp://[::1]:5060",
    ]
    assert settings.upstream == (
        Upstream("sip:127.0.0.1:5070;transport=udp", "udp", "127.0.0.1", 5070),
    )
    assert settings.auth.realm == "sipguard.test"  # what the SIPp bench harness expects
    (demo,) = settings.trunks
    assert demo.credentials[0].username == "alice"
    assert demo.credentials[0].password == "s3cret"
    matcher = SourceMatcher.from_trunks(settings.trunks)
    assert matcher.candidates("127.0.0.1") == (demo,)
    assert matcher.candidates("127.0.0.2") == ()  # the bench's uac_forbidden source
    assert settings.metrics is not None and settings.metrics.port == 9460
    assert settings.limits == Limits()
    assert settings.protection == Protection()
    assert len(warnings) == 1 and "random nonce key" in warnings[0]


def test_good_test_config(write: Write) -> None:
    settings = load_settings(str(ROOT / "config" / "test-good.yaml"))
    acme = settings.trunks[0]
    assert acme.whitelist[1] == parse_rule("192.168.1.*")  # parsed once, here
    assert acme.whitelist[1].text == "192.168.1.*"
    assert acme.algorithms == ("MD5",)
    assert acme.credentials[0].valid_until == datetime(2099, 1, 1, tzinfo=UTC)
    assert dict(acme.credentials[1].ha1) == {"MD5": "0123456789abcdef0123456789abcdef"}
    assert settings.trunks[2].credentials[0].password == "1:20"
    assert settings.upstream[1] == Upstream("sip:[::1]:5070;transport=tcp", "tcp", "::1", 5070)
    assert settings.upstream[2].port == 5061  # RFC 3261 §19.1.2 default for TLS
    assert settings.auth.refuse == "drop"
    assert settings.auth.algorithms == ("SHA-256", "MD5")
    assert settings.limits.read_deadline == 5.0
    assert settings.protection.never_ban == parse_rules(("127.0.0.1", "10.*.*.*"))
    assert settings.metrics is not None and settings.metrics.host == "::1"
    assert settings.log.format == "json"


# Each case: (BASE edited, expected problem suffix after "FILE: ").
BAD = [
    (
        replace("udp://127.0.0.1:5060", "udp://127.0.0.1:0"),
        "listen[0]: 'udp://127.0.0.1:0': the port must be 1..65535",
    ),
    (replace("udp://127.0.0.1:5060", "udp://127.0.0.1:05060"), "the port must be 1..65535"),
    (
        replace("udp://127.0.0.1:5060", "sctp://127.0.0.1:5060"),
        "transport must be one of udp, tcp, tls",
    ),
    (replace("udp://127.0.0.1:5060", "udp://::1:5060"), "IPv6 in brackets"),
    (replace("udp://127.0.0.1:5060", "udp://127.1:5060"), "'127.1' is not an IP address"),
    (replace("udp://127.0.0.1:5060", "'udp://[fe80::1%eth0]:5060'"), "zone ids are not supported"),
    (
        replace("udp://127.0.0.1:5060", "udp://127.0.0.1:5060, udp://127.0.0.1:5060"),
        "listen[1]: 'udp://127.0.0.1:5060': duplicate of listen[0]",
    ),
    (
        replace("udp://127.0.0.1:5060", "tls://127.0.0.1:5061"),
        "tls: missing: a tls:// listener needs certificate and private_key",
    ),
    (replace("listen: [udp://127.0.0.1:5060]\n", ""), "listen: missing"),
    (
        replace("sip:127.0.0.1:5070", "sip:pbx.example.com:5070"),
        "upstream[0]: 'sip:pbx.example.com:5070': 'pbx.example.com' is not an IP address; sipguard does no DNS at runtime",
    ),
    (
        replace("sip:127.0.0.1:5070", "sip:127.0.0.1:5070;transport=sctp"),
        "transport must be one of",
    ),
    (replace("sip:127.0.0.1:5070", "sip:127.0.0.1:5070;lr"), "unsupported URI parameter 'lr'"),
    (replace("sip:127.0.0.1:5070", "http://127.0.0.1"), "expected sip:HOST[:PORT]"),
    (replace("realm: sipguard.test", "realm: 'a\"b'"), "auth.realm: must not contain quotes"),
    (
        replace("realm: sipguard.test", "realm: sipguard.test\n  algorithms: [MD5, MD5-sess]"),
        "auth.algorithms[1]: 'MD5-sess': unknown algorithm",
    ),
    (
        replace("realm: sipguard.test", "realm: sipguard.test\n  algorithms: []"),
        "auth.algorithms: must name at least one",
    ),
    (
        replace("realm: sipguard.test", "realm: sipguard.test\n  nonce_ttl: 0"),
        "auth.nonce_ttl: 0 is out of range 1..86400",
    ),
    (
        replace("realm: sipguard.test", "realm: sipguard.test\n  refuse: 404"),
        "auth.refuse: '404': must be one of 403, drop",
    ),
    (
        replace("realm: sipguard.test", "realm: sipguard.test\n  secret_file: k\n  secret_env: K"),
        "auth: give either secret_file or secret_env, not both",
    ),
    (
        replace("realm: sipguard.test", "realm: sipguard.test\n  secret_env: NOPE"),
        "auth.secret_env: environment variable NOPE is not set or empty",
    ),
    (
        replace("realm: sipguard.test", "realm: yes"),
        "auth.realm: expected a string, got true (YAML reads unquoted yes/no/on/off/true/false as booleans); quote the value",
    ),
    (
        replace("realm: sipguard.test", "relm: sipguard.test"),
        "auth.relm: unknown key; did you mean 'realm'?",
    ),
    (replace("trunks:", "trunk:"), "trunk: unknown key; did you mean 'trunks'?"),
    (
        replace("whitelist: [127.0.0.1]", "whitelist: [127.0.0.1, 10.0.0.9-10.0.0.1]"),
        "trunks[0].whitelist[1]: '10.0.0.9-10.0.0.1': range end is below its start",
    ),
    (
        replace("whitelist: [127.0.0.1]", "whitelist: [1:20]"),
        "trunks[0].whitelist[0]: expected a string, got an integer (YAML reads unquoted 1:20 as 80 and 010 as 8); quote the value",
    ),
    (
        replace("whitelist: [127.0.0.1]", "whitelist: 127.0.0.1"),
        "trunks[0].whitelist: expected a list, got a string",
    ),
    (
        replace("whitelist: [127.0.0.1]", "whitelist: ['fe80::1%eth0']"),
        "trunks[0].whitelist[0]: 'fe80::1%eth0': zone ids are not allowed",
    ),
    (replace("name: demo", "name: 'de mo'"), "trunks[0].name: 'de mo': use 1-64 letters"),
    (replace("name: demo", "nam: demo"), "trunks[0].name: missing"),
    (
        replace("password: s3cret", "password: on"),
        "trunks[0].credentials[0].password: expected a string, got a boolean",
    ),
    (
        replace("password: s3cret", "password: 1:20"),
        "trunks[0].credentials[0].password: expected a string, got an integer",
    ),
    (
        replace(
            "password: s3cret", "password: s3cret, ha1: {MD5: 0123456789abcdef0123456789abcdef}"
        ),
        "trunks[0].credentials[0]: give exactly one of password, ha1, password_env, password_file (got password, ha1)",
    ),
    (
        replace("{username: alice, password: s3cret}", "{username: alice}"),
        "trunks[0].credentials[0]: give exactly one of",
    ),
    (
        replace("password: s3cret", "ha1: {MD5: abc}"),
        "trunks[0].credentials[0].ha1.MD5: expected 32 hex digits",
    ),
    (
        replace("password: s3cret", "ha1: {MD5: 0123456789abcdef0123456789abcdeg}"),
        "expected 32 hex digits",
    ),
    (
        replace("password: s3cret", "ha1: {SHA-1: 0123456789abcdef0123456789abcdef}"),
        "ha1.SHA-1: unknown algorithm",
    ),
    (
        replace("password: s3cret", "ha1: {SHA-256: 0123456789abcdef0123456789abcdef}"),
        "ha1.SHA-256: expected 64 hex digits",
    ),
    (
        replace("password: s3cret", "ha1: {SHA-256: " + "a" * 64 + "}"),
        "ha1: no HA1 for any algorithm this trunk challenges with (MD5)",
    ),
    (
        replace("password: s3cret", "password_env: NOPE"),
        "password_env: environment variable NOPE is not set",
    ),
    (
        replace("password: s3cret", "password_file: /nonexistent/pw"),
        "trunks[0].credentials[0].password_file: cannot read password file '/nonexistent/pw'",
    ),
    (
        replace("password: s3cret", "password: s3cret, valid_until: 2027-01-01"),
        "valid_until: give a time and a timezone",
    ),
    (
        replace("password: s3cret", "password: s3cret, valid_until: 2027-01-01T00:00:00"),
        "valid_until: needs a timezone",
    ),
    (
        replace("password: s3cret", "password: s3cret, valid_until: 'next year'"),
        "valid_until: 'next year': expected an ISO-8601 time",
    ),
    (
        BASE + "  - name: demo\n    whitelist: [127.0.0.2]\n",
        "trunks[1].name: 'demo': duplicate trunk name (see trunks[0].name)",
    ),
    (
        BASE + "  - name: other\n    credentials: [{username: alice, password: x}]\n",
        "trunks[1].credentials[0].username: 'alice': duplicate; usernames are unique across trunks (see trunks[0].credentials[0].username)",
    ),
    (
        BASE + "  - name: open\n",
        "trunks[1]: neither a whitelist nor credentials: this trunk would admit anyone (an open relay)",
    ),
    (
        BASE + "  - name: open\n    whitelist: []\n    allow_open: yes please\n",
        "trunks[1].allow_open: expected true or false, got a string",
    ),
    (
        BASE + "metrics:\n  listen: 127.0.0.1:99999\n",
        "metrics.listen: '127.0.0.1:99999': the port must be 1..65535",
    ),
    (BASE + "metrics: {}\n", "metrics.listen: missing"),
    (
        BASE + "log:\n  level: verbose\n",
        "log.level: 'verbose': must be one of debug, info, warning, error",
    ),
    (BASE + "limits:\n  read_deadline: -1\n", "limits.read_deadline: -1 is out of range"),
    (
        BASE + "limits:\n  max_headers: many\n",
        "limits.max_headers: expected an integer, got a string",
    ),
    (
        BASE + "limits:\n  max_header: 10\n",
        "limits.max_header: unknown key; did you mean 'max_headers'?",
    ),
    (
        BASE + "protection:\n  never_ban: ['10.1']\n",
        "protection.never_ban[0]: '10.1': an IPv4 address needs four octets",
    ),
    (
        BASE + "protection:\n  rate_action: '429'\n",
        "protection.rate_action: '429': must be one of 503, drop",
    ),
    (BASE + "auth:\n  realm: again\n", "duplicate key 'auth'"),
    ("- just\n- a list\n", "expected a mapping, got a list"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1][:60] for b in BAD])
def test_bad_config_is_refused_with_key_path(write: Write, text: str, expected: str) -> None:
    path = write(text)
    problems = problems_of(path)
    assert any(p.startswith(f"{path}: ") and expected in p for p in problems), problems


def test_every_problem_is_reported(write: Write) -> None:
    path = str(ROOT / "config" / "test-bad.yaml")
    problems = problems_of(path)
    assert len(problems) >= 15
    assert all(p.startswith(f"{path}: ") for p in problems)
    joined = "\n".join(problems)
    for part in (
        "listen[1]",
        "listen[2]",
        "upstream[0]",
        "auth.refuse",
        "trunks[0].whitelist[1]",
        "trunks[0].whitelist[4]",
        "trunks[1].name",
        "trunks[2]",
        "metrics.lisen",
        "log.level",
    ):
        assert f": {part}:" in joined, part


def test_design_example_error_format(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    """DESIGN §3: `sipguard.yaml: trunks[1].whitelist[2]: '10.0.0.9-10.0.0.1': range end ...`"""
    text = BASE + "  - name: acme\n    whitelist: [10.0.0.1, 10.0.0.2, 10.0.0.9-10.0.0.1]\n"
    path = write(text)
    monkeypatch.chdir(Path(path).parent)
    problems = problems_of("sipguard.yaml")
    assert problems == [
        "sipguard.yaml: trunks[1].whitelist[2]: '10.0.0.9-10.0.0.1': range end is below its start"
    ]


def test_unquoted_wildcard_is_a_yaml_alias(write: Write) -> None:
    path = write(replace("whitelist: [127.0.0.1]", "whitelist: [10.0.0.*, *]"))
    (problem,) = problems_of(path)
    assert "line 7, column" in problem and "quote wildcard" in problem


def test_yaml_syntax_error_has_line_and_column(write: Write) -> None:
    path = write("listen: [udp://127.0.0.1:5060\nupstream: x\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: line 2, column 9: YAML syntax error")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    assert problems_of(path) == [f"{path}: cannot read: No such file or directory"]


def test_empty_file(write: Write) -> None:
    path = write("")
    assert problems_of(path) == [f"{path}: the file is empty"]


def test_secret_file_is_read_and_never_shown(write: Write, tmp_path: Path) -> None:
    key = b"0123456789abcdef-very-secret-key"
    (tmp_path / "nonce.key").write_bytes(key + b"\n")
    (tmp_path / "nonce.key").chmod(0o600)
    path = write(replace("realm: sipguard.test", "realm: sipguard.test\n  secret_file: nonce.key"))
    settings, warnings = load_settings_with_warnings(path, environ={}, now=NOW)
    assert settings.auth.secret == key  # relative to the config file, trailing newline dropped
    assert settings.auth.secret_source == f"file:{tmp_path / 'nonce.key'}"
    assert "very-secret" not in repr(settings)
    assert warnings == []


def test_secret_from_environment(write: Write) -> None:
    path = write(replace("realm: sipguard.test", "realm: sipguard.test\n  secret_env: NONCE_KEY"))
    settings, _ = load_settings_with_warnings(path, environ={"NONCE_KEY": "k" * 32}, now=NOW)
    assert settings.auth.secret == b"k" * 32
    assert settings.auth.secret_source == "env:NONCE_KEY"


def test_short_secret_is_refused_without_showing_it(write: Write, tmp_path: Path) -> None:
    (tmp_path / "nonce.key").write_bytes(b"tooshort-secret")
    path = write(replace("realm: sipguard.test", "realm: sipguard.test\n  secret_file: nonce.key"))
    (problem,) = problems_of(path)
    assert problem == f"{path}: auth.secret_file: the secret is shorter than 16 bytes"


def test_secret_file_that_is_a_directory(write: Write, tmp_path: Path) -> None:
    (tmp_path / "keydir").mkdir()
    path = write(replace("realm: sipguard.test", "realm: sipguard.test\n  secret_file: keydir"))
    (problem,) = problems_of(path)
    expected = f"{path}: auth.secret_file: cannot read secret file '{tmp_path / 'keydir'}': "
    assert problem == expected + "Is a directory"


def test_unreadable_secret_file(write: Write, tmp_path: Path) -> None:
    secret = tmp_path / "nonce.key"
    secret.write_bytes(b"x" * 32)
    secret.chmod(0)
    try:
        if os.access(secret, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        path = write(
            replace("realm: sipguard.test", f"realm: sipguard.test\n  secret_file: {secret}")
        )
        (problem,) = problems_of(path)
        assert (
            problem
            == f"{path}: auth.secret_file: cannot read secret file '{secret}': Permission denied"
        )
    finally:
        secret.chmod(0o600)


def test_password_sources(write: Write, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    text = BASE + (
        "  - name: more\n    credentials:\n"
        "      - {username: bob, password_env: BOB_PW}\n"
        "      - {username: carol, password_file: pw}\n"
    )
    settings, _ = load_settings_with_warnings(write(text), environ={"BOB_PW": "from-env"}, now=NOW)
    bob, carol = settings.trunks[1].credentials
    assert bob.password == "from-env"
    assert carol.password == "from-file"
    assert "from-" not in repr(settings)


def test_wrong_typed_password_is_not_quoted(write: Write) -> None:
    path = write(replace("password: s3cret", "password: 123456"))
    (problem,) = problems_of(path)
    assert "123456" not in problem


def test_warnings(write: Write) -> None:
    text = (
        replace(
            "{username: alice, password: s3cret}",
            "{username: alice, password: s3cret, valid_until: 2026-06-10T00:00:00Z}\n"
            "      - {username: old, password: x, valid_until: '2026-01-01T00:00:00+02:00'}",
        )
        + "  - name: open\n    allow_open: true\n"
    )
    settings, warnings = load_settings_with_warnings(write(text), environ={}, now=NOW)
    joined = "\n".join(warnings)
    assert "trunks[0].credentials[0].valid_until: expires soon" in joined
    assert "trunks[0].credentials[1].valid_until: expired on 2025-12-31T22:00:00+00:00" in joined
    assert "trunks[1]: open trunk" in joined
    assert settings.trunks[1].allow_open
    old = settings.trunks[0].credentials[1]
    assert old.valid_until == datetime(2025, 12, 31, 22, tzinfo=UTC)


def test_ha1_credential(write: Write) -> None:
    path = write(replace("password: s3cret", "ha1: {MD5: 0123456789ABCDEF0123456789ABCDEF}"))
    settings = load_settings_with_warnings(path, environ={}, now=NOW)[0]
    cred = settings.trunks[0].credentials[0]
    assert isinstance(cred, Credential) and cred.password is None
    assert dict(cred.ha1) == {"MD5": "0123456789abcdef0123456789abcdef"}
    with pytest.raises(TypeError):
        cred.ha1["MD5"] = "x"  # type: ignore[index]


def test_ipv6_listener(write: Write) -> None:
    path = write(replace("udp://127.0.0.1:5060", "'tcp://[0:0::1]:5060'"))
    settings = load_settings_with_warnings(path, environ={}, now=NOW)[0]
    assert settings.listen == (Listener("tcp", "::1", 5060),)
    assert settings.listen[0].url == "tcp://[::1]:5060"


def test_listener_mapping_with_advertise(write: Write) -> None:
    text = replace(
        "listen: [udp://127.0.0.1:5060]",
        "listen:\n"
        "  - {url: udp://0.0.0.0:5060, advertise: 203.0.113.5}\n"
        "  - {url: 'tls://[::]:5061', advertise: '[2001:db8::5]:5071'}\n"
        "  - udp://127.0.0.1:5062\n"
        "tls: {certificate: CERT, private_key: KEY}",
    )
    path = write(text)
    cert, key = (Path(path).parent / name for name in ("cert.pem", "key.pem"))
    for file in (cert, key):
        file.write_text("x")
        file.chmod(0o600)
    path = write(text.replace("CERT", str(cert)).replace("KEY", str(key)))
    settings, warnings = load_settings_with_warnings(path, environ={}, now=NOW)
    assert settings.listen == (
        Listener("udp", "0.0.0.0", 5060, advertise=("203.0.113.5", 5060)),
        Listener("tls", "::", 5061, advertise=("2001:db8::5", 5071)),
        Listener("udp", "127.0.0.1", 5062),
    )
    assert [x.named for x in settings.listen] == [
        ("203.0.113.5", 5060),
        ("2001:db8::5", 5071),
        ("127.0.0.1", 5062),
    ]
    assert not [x for x in warnings if "listens on every local address" in x]


def test_wildcard_listener_without_advertise_is_warned(write: Write) -> None:
    text = replace("listen: [udp://127.0.0.1:5060]", "listen: [udp://0.0.0.0:5060]")
    settings, warnings = load_settings_with_warnings(write(text), environ={}, now=NOW)
    assert settings.listen == (Listener("udp", "0.0.0.0", 5060),)
    assert [x for x in warnings if "every local address" in x] == [
        f"{settings.source}: listen[0]: 'udp://0.0.0.0:5060' listens on every local address, "
        "so our Via and Record-Route name 0.0.0.0, which peers on other hosts cannot send to "
        "(their in-dialog requests and their answers to our requests fail); give the address "
        "they reach us at: {url: udp://0.0.0.0:5060, advertise: 203.0.113.5}, or listen on "
        "that address"
    ]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{url: udp://0.0.0.0:5060, advertise: 0.0.0.0}", "listen[0].advertise: '0.0.0.0': peers"),
        ("{url: udp://0.0.0.0:5060, advertise: 'x.example'}", "listen[0].advertise: 'x.example'"),
        ("{url: udp://0.0.0.0:5060, advertise: '1.2.3.4:0'}", "the port must be 1..65535"),
        ("{url: udp://0.0.0.0:5060, advertize: 1.2.3.4}", "did you mean 'advertise'?"),
        ("{advertise: 1.2.3.4}", "listen[0].url: missing"),
    ],
)
def test_listener_mapping_errors(write: Write, entry: str, problem: str) -> None:
    text = replace("listen: [udp://127.0.0.1:5060]", f"listen: [{entry}]")
    with pytest.raises(ConfigError) as caught:
        load_settings_with_warnings(write(text), environ={}, now=NOW)
    assert problem in str(caught.value)


def test_ipv4_and_ipv6_wildcards_on_one_port_are_two_listeners(write: Write) -> None:
    # what the IPv6-only warning below tells the operator to add: 0.0.0.0 and :: are both the
    # integer 0, and were once refused as duplicates of each other
    text = replace(
        "listen: [udp://127.0.0.1:5060]",
        'listen: ["udp://[::]:5060", "udp://0.0.0.0:5060"]',
    )
    settings = load_settings_with_warnings(write(text), environ={}, now=NOW)[0]
    assert [x.url for x in settings.listen] == ["udp://[::]:5060", "udp://0.0.0.0:5060"]
    twice = replace(
        "listen: [udp://127.0.0.1:5060]", 'listen: ["udp://[::]:5060", "udp://[0::0]:5060"]'
    )
    (problem,) = problems_of(write(twice))
    assert problem.endswith(": listen[1]: 'udp://[0::0]:5060': duplicate of listen[0]")


def test_ipv6_wildcard_listener_says_it_is_ipv6_only(write: Write) -> None:
    text = replace(
        "listen: [udp://127.0.0.1:5060]",
        'listen: ["udp://[::]:5060", "tcp://[::1]:5060", "udp://0.0.0.0:5062"]',
    )
    settings, warnings = load_settings_with_warnings(write(text), environ={}, now=NOW)
    assert [x for x in warnings if "IPv6 only" in x] == [
        f"{settings.source}: listen[0]: 'udp://[::]:5060' receives IPv6 only; "
        "add udp://0.0.0.0:5060 for IPv4"
    ]
