"""`sipguard admin ...`: the admin API from the command line, so an operator never writes curl.

Owns: the subcommands' work (`bans`, `ban ADDR --duration S`, `unban ADDR`, `reload`, `status`,
`upstreams`),
their output (a short table or lines, or the API's JSON with `--json`) and exit codes:
0 done, 1 nothing to do (`unban` of an address not banned), 64 a request the API refused as
malformed, 69 the API cannot be reached, 77 the token was refused, 78 the config file has no
usable `admin` section or a reload was refused (the running configuration is kept).

Never does: load the whole configuration. It reads the `admin` section only (listener and token,
validated as `sipguard run` would), so it still works when the rest of the file is broken, which
is when `sipguard admin reload` is most useful. The token goes in a header, never on a command
line or in output.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Final
from urllib.parse import quote

from sipguard.errors import ConfigError
from sipguard.exits import EX_CONFIG, EX_NOPERM, EX_NOTHING, EX_OK, EX_UNAVAILABLE, EX_USAGE
from sipguard.settings import AdminSettings

TIMEOUT: Final = 30.0  # seconds; a reload reads and checks the whole file
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024  # GET /v1/bans with 100 k bans is ~10 MB


class _Failed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def base_url(admin: AdminSettings) -> str:
    """Where to reach the API: a wildcard listener is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(admin.host, admin.host)  # noqa: S104
    return f"http://{'[' + host + ']' if ':' in host else host}:{admin.port}"


def call(admin: AdminSettings, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request; (HTTP status, decoded JSON). Raises _Failed when unreachable."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - the URL is built from the config: http only
        base_url(admin) + path,
        data=data,
        method=method,
        headers={
            "Authorization": "Bearer " + admin.token.decode("utf-8", "replace"),
            "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return response.status, json.loads(response.read(MAX_ANSWER_BYTES) or b"null")
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read(MAX_ANSWER_BYTES) or b"null")
        except ValueError:
            answer = {"error": exc.reason}
        return exc.code, answer
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Failed(
            EX_UNAVAILABLE,
            f"cannot reach the admin API at {base_url(admin)}: {reason} "
            "(is sipguard running with this config's admin section?)",
        ) from None


def _check(status: int, answer: Any) -> Any:
    if status == 401:
        raise _Failed(EX_NOPERM, "the admin API refused the token (admin.token_file differs?)")
    if status >= 400 and status not in (404, 409, 422):
        message = answer.get("error") if isinstance(answer, dict) else None
        raise _Failed(EX_USAGE if status < 500 else EX_UNAVAILABLE, f"{status}: {message}")
    return answer


def _print_upstreams(answer: Any, out: Any) -> None:
    """`sipguard admin upstreams`: one line per upstream, preferred first as configured."""
    print(
        f"{'URI':<40} {'PRI':>3} {'W':>3} {'STATE':<5} {'SINCE':<21} {'LAST PROBE':<33} "
        "FAILS OKS FORWARDED FAILED_OVER TIMEOUTS",
        file=out,
    )
    for u in answer["upstreams"]:
        probe = u["last_probe"]
        last = "-" if probe is None else f"{probe['at']} {probe['outcome']}"
        line = (
            f"{u['uri']:<40} {u['priority']:>3} {u['weight']:>3} {u['state']:<5} "
            f"{u['since'] or 'start':<21} {last:<33} {u['consecutive_failures']:>5} "
            f"{u['consecutive_successes']:>3} {u['forwarded']:>9} {u['failed_over']:>11} "
            f"{u['timeouts']:>8}"
        )
        print(line, file=out)


def _change(
    args: argparse.Namespace,
    admin: AdminSettings,
    out: Any,
    request: tuple[str, str, Any],
    nothing: int,
) -> tuple[int, Any]:
    """`ban`/`unban`: send the change, print the JSON answer when asked; `nothing` is the status
    that means nothing was done (the caller says why)."""
    method, path, body = request
    status, answer = call(admin, method, path, body)
    answer = _check(status, answer)
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
    return status, answer


def _run(args: argparse.Namespace, admin: AdminSettings, out: Any) -> int:
    action = args.admin_command
    if action == "upstreams":
        answer = _check(*call(admin, "GET", "/v1/upstreams"))
        if args.json:
            print(json.dumps(answer, indent=2), file=out)
        else:
            _print_upstreams(answer, out)
        return EX_OK
    if action == "bans":
        answer = _check(*call(admin, "GET", "/v1/bans"))
        if args.json:
            print(json.dumps(answer, indent=2), file=out)
        elif not answer["bans"]:
            print("no bans", file=out)
        else:
            print(f"{'ADDRESS':<40} {'SINCE':<21} {'UNTIL':<21} FAILURES", file=out)
            for ban in answer["bans"]:
                line = (
                    f"{ban['address']:<40} {ban['since']:<21} {ban['until']:<21} {ban['failures']}"
                )
                print(line, file=out)
        return EX_OK
    if action == "ban":
        body = {"address": args.address, "duration": args.duration}
        status, answer = _change(args, admin, out, ("POST", "/v1/bans", body), 409)
        if status == 409:
            print(f"not banned: {answer['error']}", file=sys.stderr)
            return EX_NOTHING
        if not args.json:
            print(f"banned {answer['ban']['address']} until {answer['ban']['until']}", file=out)
        return EX_OK
    if action == "unban":
        path = "/v1/bans/" + quote(args.address, safe="")
        status, answer = _change(args, admin, out, ("DELETE", path, None), 404)
        if status == 404:
            print(f"{args.address} is not banned", file=sys.stderr)
            return EX_NOTHING
        if not args.json:
            print(f"unbanned {answer['unbanned']}", file=out)
        return EX_OK
    if action == "reload":
        status, answer = call(admin, "POST", "/v1/reload")
        answer = _check(status, answer)
        if args.json:
            print(json.dumps(answer, indent=2), file=out)
        elif status == 200:
            print(f"reload applied: {answer['running']['file']}", file=out)
        else:
            print("reload refused, the running configuration is kept:", file=sys.stderr)
            for problem in answer.get("errors", []):
                print(f"  {problem}", file=sys.stderr)
        return EX_OK if status == 200 else EX_CONFIG
    answer = _check(*call(admin, "GET", "/v1/status"))
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
    else:
        for key in ("version", "pid", "started", "uptime_seconds", "workers"):
            print(f"{key}: {answer.get(key)}", file=out)
        if "worker_pids" in answer:  # workers: N (the supervisor answers)
            print(f"worker_pids: {' '.join(str(p) for p in answer['worker_pids'])}", file=out)
        config = answer.get("config", {})
        print(f"config: {config.get('file')} sha256={config.get('sha256')}", file=out)
    return EX_OK


def admin_command(args: argparse.Namespace, out: Any = None) -> int:
    """`sipguard admin ...` (the parser is `sipguard.cli`'s: `--config`, `--json`,
    `admin_command`, `address`, `duration`)."""
    from sipguard.config import load_admin_settings

    out = out if out is not None else sys.stdout
    try:
        admin = load_admin_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    if admin is None:
        print(f"{args.config}: admin: missing: the admin API is off in this file", file=sys.stderr)
        return EX_CONFIG
    try:
        return _run(args, admin, out)
    except _Failed as exc:
        print(f"sipguard admin: {exc}", file=sys.stderr)
        return exc.code
