"""The `sipguard` command line: `run`, `check-config`, `hash-password`, `verify-identity`.

Owns: argument parsing and exit codes. Each subcommand's work lives in its own module and is
imported only when that subcommand runs, so `sipguard --help` stays fast.

Exit codes follow sysexits: 0 success, 64 usage, 78 configuration error (EX_CONFIG),
70 internal error, 71 OS error (a port in use).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sipguard import __version__

EX_OK = 0
EX_USAGE = 64
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipguard",
        description="SIP edge authentication proxy: IP whitelist and digest authentication "
        "in front of a SIP platform.",
    )
    parser.add_argument("--version", action="version", version=f"sipguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the proxy daemon")
    run.add_argument("--config", "-c", required=True, metavar="FILE", help="YAML config file")

    check = sub.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("file", metavar="FILE", help="YAML config file")

    hashpw = sub.add_parser(
        "hash-password",
        help="print the HA1 values of a credential (the password is read from the terminal "
        "or stdin, never from the command line)",
    )
    hashpw.add_argument("--username", "-u", required=True)
    hashpw.add_argument("--realm", "-r", required=True)
    hashpw.add_argument(
        "--algorithm",
        "-a",
        action="append",
        choices=["MD5", "SHA-256", "SHA-512-256"],
        help="algorithm (repeatable; default: all three)",
    )
    verify = sub.add_parser(
        "verify-identity",
        help="check the signed identity headers of one SIP request read from stdin "
        "(exit 0 valid, 1 invalid with the reason)",
    )
    verify.add_argument("--config", "-c", required=True, metavar="FILE", help="YAML config file")
    verify.add_argument(
        "--max-age",
        type=float,
        metavar="S",
        help="seconds a signature stays valid (default: identity.max_age)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EX_USAGE
    if args.command == "run":
        from sipguard.observer import build_observer
        from sipguard.server import run_from_file

        return run_from_file(args.config, observer_factory=build_observer)
    if args.command == "check-config":
        from sipguard.config import check_config_command

        return check_config_command(args.file)
    if args.command == "hash-password":
        from sipguard.hashpw import hash_password_command

        return hash_password_command(args.username, args.realm, args.algorithm)
    if args.command == "verify-identity":
        from sipguard.verifyid import verify_identity_command

        return verify_identity_command(args.config, args.max_age)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it
    return EX_USAGE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
