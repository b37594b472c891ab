"""The RFC 3261 §25 grammar pieces sipguard reads, as regex source fragments (bytes).

Owns: one home for each piece of the general grammar (token, quoted-string, gen-value,
generic-param, SIP URI parts, host and port, addr-spec forms, Via sent-protocol and sent-by,
Call-ID word), written once and assembled by the modules that compile them (`params`, `uri`,
`values`, `digest`, `fast`, `parser`). Never compiles a pattern, never matches, holds no state:
plain bytes constants, so importing it costs nothing and it depends on nothing.

RFC 3261 §7.3.1 (LWS), §19.1.1 (SIP URI), §20.42 (Via), §25 (ABNF); RFC 5118 and RFC 5954 (IPv6
references).
"""

from __future__ import annotations

# token (RFC 3261 §25): its characters, and the token itself.
TOKEN_CLASS = rb"A-Za-z0-9\-.!%*_+`'~"
TOKEN = rb"[" + TOKEN_CLASS + rb"]+"
# qdtext per RFC 3261 §25 plus raw control bytes other than CR/LF: RFC 4475 §3.1.1.2 (intmeth)
# shows BEL/NUL/DEL in a display name; accepting them raw is harmless for a proxy that forwards
# the bytes, and the quoted string still ends only at an unescaped DQUOTE.
QUOTED = rb'"(?:[^"\\\r\n]|\\[^\r\n])*"'
# gen-value = token / host / quoted-string (host may be an IPv6 reference, or unbracketed
# IPv6 as in Via received, RFC 5118 §4.5; hence ':' beside the token characters).
GEN_VALUE = rb"(?:[" + TOKEN_CLASS + rb":]+|" + QUOTED + rb"|\[[0-9A-Fa-f:.]+\])"
# one generic-param with its SWS; groups: name, value.
PARAM = rb"[ \t]*;[ \t]*(" + TOKEN + rb")(?:[ \t]*=[ \t]*(" + GEN_VALUE + rb"))?"
# *( SEMI generic-param ) with the SWS RFC 3261 allows around SEMI and EQUAL.
PARAMS = rb"(?:[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*" + GEN_VALUE + rb")?)*"


# SIP URI (RFC 3261 §19.1.1, §25): user, password, hostport, uri-parameters, headers.
USER = rb"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+"
USER_NS = rb"[A-Za-z0-9\-_.!~*'()&=+$/%]+"  # addr-spec form: no ';', '?', ','
PASSWORD = rb"[A-Za-z0-9\-_.!~*'()&=+$,%]*"
PASSWORD_NC = rb"[A-Za-z0-9\-_.!~*'()&=+$%]*"
IPV6REF = rb"\[[0-9A-Fa-f:.]+\]"
# hostname / IPv4: hostname characters, no leading '.' or '-'; exact IPv6 syntax is checked
# with ipaddress (RFC 5954), only when there are brackets.
HOSTNAME = rb"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?"
HOST = rb"(?:" + HOSTNAME + rb"|" + IPV6REF + rb")"
# port = 1*DIGIT, bounded to 0..65535 in the grammar itself so no range check is needed later.
PORT = (
    rb"(?:[0-9]{1,4}(?![0-9])|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
PCHAR = rb"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]"
HCHAR = rb"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]"
URI_HEADERS = HCHAR + rb"+=" + HCHAR + rb"*(?:&" + HCHAR + rb"+=" + HCHAR + rb"*)*"
SIP_SCHEME = rb"[Ss][Ii][Pp][Ss]?"
# A sip/sips URI and the addr-spec form of one (no ';', '?', ','), without capturing groups
# (`_NC`) so that they can sit inside a larger pattern (name-addr, addr-spec).
SIP_URI_NC = (
    SIP_SCHEME + rb":(?:" + USER + rb"(?::" + PASSWORD + rb")?@)?" + HOST
    + rb"(?::" + PORT + rb")?(?:;" + PCHAR + rb"+(?:=" + PCHAR + rb"+)?)*(?:\?" + URI_HEADERS
    + rb")?"
)  # fmt: skip
SIP_ADDR_SPEC_NC = (
    SIP_SCHEME + rb":(?:" + USER_NS + rb"(?::" + PASSWORD_NC + rb")?@)?" + HOST
    + rb"(?::" + PORT + rb")?"
)  # fmt: skip
# RFC 3261 §19.1.1 absoluteURI of another scheme: visible characters, not sip/sips (a sip URI
# that failed its grammar must not slip through as "another scheme").
OTHER_URI_NC = rb"(?!" + SIP_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\x7f<>\"]+"
OTHER_ADDR_SPEC_NC = rb"(?!" + SIP_SCHEME + rb":)[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\x7f<>\";,?]+"


# Via (RFC 3261 §20.42): sent-protocol LWS sent-by *( SEMI via-params ), LWS around '/' and ':'.
# The head, up to the parameters; groups: protocol name, version, transport, host, port.
VIA_HEAD = (
    rb"(" + TOKEN + rb")[ \t]*/[ \t]*(" + TOKEN + rb")[ \t]*/[ \t]*(" + TOKEN + rb")[ \t]+"
    rb"(" + HOST + rb")(?:[ \t]*:[ \t]*(" + PORT + rb"))?"
)


# RFC 3261 §25 callid = word [ "@" word ]
CALL_ID_WORD = rb"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
