"""Header parameters (`*( SEMI generic-param )`): their split, the name cache, their spans.

Owns: `Params` (the split form: names lowercase, values raw, None for a flag), `Lowered` (the
bounded cache name as received -> lowercase; `digest` keeps one for auth-param names) and
`param_name` (its instance for parameter names), `parse_params` (an already validated
`*( SEMI generic-param )` section -> `Params`), `Parameters` (the base of the values that carry
header parameters, split on first use) and `via_param_spans` (where each parameter of a Via
value sits, for the edit writers). Never validates a whole value (`values` does), never raises
anything but `ParseError`, never does I/O.

RFC 3261 §7.3.1 (SWS around SEMI and EQUAL), §20.42 (Via parameters), §25 (generic-param).
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Generic, TypeVar

from sipguard.errors import ParseError
from sipguard.sip.abnf import GEN_VALUE, PARAM, PARAMS, TOKEN, VIA_HEAD

__all__ = ["Lowered", "Parameters", "Params", "param_name", "parse_params", "via_param_spans"]

Params = tuple[tuple[bytes, bytes | None], ...]
_Name = TypeVar("_Name", bytes, str)


class Lowered(dict[_Name, _Name], Generic[_Name]):
    """Parameter name as received -> lowercase: one dict look-up (`cache[name]`), the
    lowercasing only on a miss, remembered while the cache has room and the name is short (a
    flood of distinct names cannot grow it). Names are nearly always the same few."""

    __slots__ = ()

    def __missing__(self, name: _Name) -> _Name:
        low = name.lower()
        if len(self) < 1024 and len(name) <= 32:
            self[name] = low
        return low


param_name: Lowered[bytes] = Lowered()
# One generic-param with its SWS: (name, value or b"").
_PARAM_RE = re.compile(PARAM)


def parse_params(raw: bytes) -> Params:
    """Split an already validated `*( SEMI generic-param )` section."""
    if not raw:
        return ()
    lowered = param_name
    return tuple([(lowered[name], value or None) for name, value in _PARAM_RE.findall(raw)])


class Parameters:
    """The header parameters of a value (`*( SEMI generic-param )`, validated with it), split
    on first use and kept; a look-up walks them without another call."""

    __slots__ = ("_params", "_params_raw")

    _params: Params | None
    _params_raw: bytes

    @property
    def params(self) -> Params:
        params = self._params
        if params is None:
            params = self._params = parse_params(self._params_raw)
        return params

    def param(self, name: bytes) -> bytes | None:
        """The value of the first parameter `name` (lowercase); None when absent or a flag."""
        params = self._params
        if params is None:
            params = self._params = parse_params(self._params_raw)
        for key, value in params:
            if key == name:
                return value
        return None

    def has_param(self, name: bytes) -> bool:
        params = self._params
        if params is None:
            params = self._params = parse_params(self._params_raw)
        for key, _ in params:  # noqa: SIM110  (any() over a generator: a call per item)
            if key == name:
                return True
        return False


# A Via value up to its parameters (sent-protocol LWS sent-by).
_VIA_HEAD_RE = re.compile(VIA_HEAD)
# The run of parameters after a Via head (matched as a whole it ends where matching them one
# by one stops: nothing after the repeat makes it backtrack), and one parameter as (its text,
# leading LWS included; its name).
_PARAMS_RUN_RE = re.compile(PARAMS)
_PARAM_TEXT_RE = re.compile(
    rb"([ \t]*;[ \t]*(" + TOKEN + rb")(?:[ \t]*=[ \t]*" + GEN_VALUE + rb")?)"
)


def via_param_spans(element: bytes) -> tuple[int, list[tuple[bytes, int, int]]]:
    """For one Via value: the offset where its parameters start and, for each parameter, its
    lowercase name and the span of `;name[=value]` (leading LWS included). Used by edits.
    One match finds where the parameters end, one `findall` reads them; the spans are the
    running sum of their lengths."""
    m = _VIA_HEAD_RE.match(element)
    if m is None:
        raise ParseError("malformed Via")
    head_end = m.end()
    run_end = _PARAMS_RUN_RE.match(element, head_end).end()  # type: ignore[union-attr]  # * matches
    if run_end == head_end:
        return head_end, []
    texts, names = zip(*_PARAM_TEXT_RE.findall(element, head_end, run_end), strict=True)
    offsets = list(accumulate(map(len, texts), initial=head_end))
    return head_end, list(
        zip(map(param_name.__getitem__, names), offsets, offsets[1:], strict=False)
    )
