"""The digest answer admission reads against the full validation of `DigestAnswer.from_params`.

`admission._answer` validates the parameters of an ASCII credentials value no longer than
`MAX_PARAM_LENGTH` as `parse_credentials` gives them (`DigestAnswer.from_lowered`: lowercase
unique names, short ASCII values) and any other value through `from_params`. Both must give
the same answer, or the same refusal, for every value.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.auth.answer import MAX_PARAM_LENGTH, DigestAnswer, MalformedAnswer
from sipguard.errors import ParseError
from sipguard.proxy.digest_check import _answer
from sipguard.sip import parse_credentials

NAMES = ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce"]
VALUES = {
    "username": ['"alice"', '"Al\\"ice"', '"ålice"', '""', '"' + "u" * MAX_PARAM_LENGTH + '"'],
    "realm": ['"sipguard.test"', "sipguard.test"],
    "nonce": ['"n0nce"', '""'],
    "uri": ['"sip:bob@127.0.0.1"', "sip:bob@127.0.0.1:5060"],
    "response": ['"' + "0123456789abcdef" * 2 + '"', '"' + "ABCDEF0123456789" * 4 + '"', '"xyz"'],
    "algorithm": ["MD5", "md5-Sess", "SHA-256", "SHA-1", '"MD5"'],
    "qop": ["auth", '"auth"', "auth-int", "bogus"],
    "nc": ["00000001", "0000000g", "1"],
    "cnonce": ['"c1"', '""'],
    "opaque": ['"0paque"'],
    "userhash": ["true", "FALSE", "maybe"],
}


def both(value: bytes) -> tuple[str, object]:
    try:
        credentials = parse_credentials(value)
    except ParseError:
        return "parse", None
    results: list[tuple[str, object]] = []
    for read in (_answer, lambda _v, c: DigestAnswer.from_params(c.params, latin1=True)):
        try:
            results.append(("answer", read(value, credentials)))
        except MalformedAnswer as exc:
            results.append(("malformed", str(exc)))
    assert results[0] == results[1], value
    return results[0]


@settings(max_examples=400, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(sorted(VALUES)), max_size=12),
    data=st.data(),
    upper=st.booleans(),
)
def test_fast_and_full_validation_agree(
    chosen: list[str], data: st.DataObject, upper: bool
) -> None:
    params = []
    for name in [*NAMES[:5], *chosen]:
        value = data.draw(st.sampled_from(VALUES[name]))
        params.append(f"{name.upper() if upper and name == 'realm' else name}={value}")
    both(("Digest " + ", ".join(params)).encode("utf-8"))


def test_both_paths_are_taken() -> None:
    good = (
        'Digest username="alice", realm="r", nonce="n", uri="sip:x", qop=auth, nc=00000001, '
        'cnonce="c", response="' + "0" * 32 + '"'
    )
    kind, answer = both(good.encode())
    assert kind == "answer" and isinstance(answer, DigestAnswer) and answer.nonce_count == 1
    assert both(good.replace("alice", "ålice").encode())[0] == "answer"  # non-ASCII: full path
    long = good.replace("alice", "a" * MAX_PARAM_LENGTH)
    assert both(long.encode())[0] == "answer"  # longer than one parameter may be: full path
    too_long = good.replace("alice", "a" * (MAX_PARAM_LENGTH + 1))
    assert both(too_long.encode()) == ("malformed", "parameter 'username' is too long")
    assert both(good.replace(", qop=auth", ", QOP=auth, qop=auth").encode())[0] == "parse"
    assert both(b'Digest username="a"') == ("malformed", "missing realm")
