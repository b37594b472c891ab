"""`sipguard hash-password`: print the HA1 values of a credential (shell).

Owns: reading a password from the terminal (asked twice) or from stdin (one line), and printing
one `ALGORITHM: hex` line per algorithm, ready to paste under a credential's `ha1:` mapping
(RFC 7616 §3.4.2: HA1 = H(username ":" realm ":" password)).

Never does: take the password from the command line (it would show in `ps` and shell history),
echo it, or write it anywhere. The digest math is `sipguard.auth.digest`.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence

from sipguard.auth.digest import BASE_ALGORITHMS, canonical_algorithm, compute_ha1
from sipguard.exits import EX_DATAERR, EX_OK, EX_USAGE

# A password line longer than this is a pasted file, not a password.
MAX_PASSWORD_BYTES = 4096


class _InputProblem(Exception):
    def __init__(self, message: str, code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first and getpass.getpass("Password (again): ") != first:
            raise _InputProblem("the passwords do not match")
        return first
    # One line; its newline (LF or CRLF) is not part of the password. Bounded read.
    line = sys.stdin.buffer.readline(MAX_PASSWORD_BYTES + 3)
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    if len(line) > MAX_PASSWORD_BYTES:
        raise _InputProblem(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise _InputProblem("the password is not valid UTF-8", EX_DATAERR) from None


def hash_password_command(username: str, realm: str, algorithms: Sequence[str] | None) -> int:
    """Exit status per sysexits; the HA1 lines go to stdout, problems to stderr."""
    chosen: list[str] = []
    for name in algorithms or BASE_ALGORITHMS:
        algorithm = canonical_algorithm(name)
        if algorithm is None or algorithm not in BASE_ALGORITHMS:
            print(f"sipguard hash-password: unknown algorithm {name!r}", file=sys.stderr)
            return EX_USAGE
        if algorithm not in chosen:
            chosen.append(algorithm)
    if not username or not realm:
        print("sipguard hash-password: username and realm must not be empty", file=sys.stderr)
        return EX_USAGE
    try:
        password = _read_password()
    except _InputProblem as problem:
        print(f"sipguard hash-password: {problem}", file=sys.stderr)
        return problem.code
    except (EOFError, KeyboardInterrupt):
        print("\nsipguard hash-password: no password given", file=sys.stderr)
        return EX_USAGE
    if not password:
        print("sipguard hash-password: the password is empty", file=sys.stderr)
        return EX_USAGE
    for algorithm in chosen:
        print(f"{algorithm}: {compute_ha1(algorithm, username, realm, password)}")
    return EX_OK
