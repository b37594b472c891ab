"""The `sipguard` command line: `run`, `check-config`, `hash-password`, `gen-key`, `admin`,
`verify-identity`.

Owns: argument parsing and exit codes. Each subcommand's work lives in its own module and is
imported only when that subcommand runs, so `sipguard --help` stays fast.

Exit codes follow sysexits (`sipguard.exits`): 0 success, 64 usage, 65 bad input data
(`hash-password`), 71 OS error (a port in use), 73 cannot create the output file (`gen-key`),
78 configuration error (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sipguard import __version__
from sipguard.exits import EX_CANTCREAT, EX_OK, EX_USAGE


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
    check.add_argument("file", metavar="FILE", nargs="?", help="YAML config file")
    check.add_argument(
        "--config", "-c", metavar="FILE", dest="config", help="the same, as `run` takes it"
    )

    genkey = sub.add_parser(
        "gen-key",
        help="write a new nonce key (for auth.secret_file) to FILE: 32 random bytes as 64 hex "
        "digits, mode 0600; never overwrites",
    )
    genkey.add_argument("file", metavar="FILE", help="the key file to create")

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

    admin = sub.add_parser("admin", help="see and change live state through the admin API")
    admin.add_argument(
        "--config",
        "-c",
        default="/etc/sipguard/sipguard.yaml",
        metavar="FILE",
        help="config file naming the admin listener and token (default %(default)s)",
    )
    admin.add_argument("--json", action="store_true", help="print the API's JSON answer")
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    actions.add_parser("bans", help="list the banned sources")
    ban = actions.add_parser("ban", help="ban a source address")
    ban.add_argument("address", metavar="ADDR")
    ban.add_argument("--duration", type=float, metavar="S", help="seconds (default: configured)")
    unban = actions.add_parser("unban", help="lift a ban: the source is served at once")
    unban.add_argument("address", metavar="ADDR")
    actions.add_parser("reload", help="reload the config file as SIGHUP does; print any errors")
    actions.add_parser("status", help="version, uptime, workers, config file and its hash")
    actions.add_parser("upstreams", help="each upstream: state since when, last probe, failovers")
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

        if args.file is not None and args.config is not None and args.file != args.config:
            parser.error("check-config: give the config file once (FILE or --config FILE)")
        path = args.file if args.file is not None else args.config
        if path is None:
            parser.error("check-config: the config file is missing (FILE or --config FILE)")
        return check_config_command(path)
    if args.command == "gen-key":
        return gen_key_command(args.file)
    if args.command == "hash-password":
        from sipguard.hashpw import hash_password_command

        return hash_password_command(args.username, args.realm, args.algorithm)
    if args.command == "admin":
        from sipguard.admin.client import admin_command

        return admin_command(args)
    if args.command == "verify-identity":
        from sipguard.verifyid import verify_identity_command

        return verify_identity_command(args.config, args.max_age)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it
    return EX_USAGE  # pragma: no cover


def gen_key_command(path: str) -> int:
    """`sipguard gen-key FILE`: 0, or 73 when FILE exists or cannot be created."""
    from sipguard.genkey import write_key

    try:
        write_key(path)
    except FileExistsError:
        print(f"sipguard gen-key: {path}: exists; refusing to overwrite a key", file=sys.stderr)
        return EX_CANTCREAT
    except OSError as exc:
        print(f"sipguard gen-key: {path}: {exc.strerror or exc}", file=sys.stderr)
        return EX_CANTCREAT
    print(
        f"{path}: new nonce key written (64 hex digits, mode 0600). Name it in "
        "auth.secret_file; the daemon's user must be able to read it "
        f"(e.g. chgrp sipguard {path} && chmod 0640 {path})."
    )
    return EX_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
