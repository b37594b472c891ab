"""The exit codes of the `sipguard` command, in one place (sysexits.h numbering).

Owns: every code a subcommand returns (`run`, `check-config`, `hash-password`, `gen-key`,
`admin`, `verify-identity`) and the meaning of each. The systemd unit relies on `EX_CONFIG`
(`RestartPreventExitStatus=78`: restarting does not fix a bad file).

Never does: anything else; every module imports it, so it imports nothing.
"""

from __future__ import annotations

from typing import Final

EX_OK: Final = 0  # done; for `run`, a clean stop (SIGTERM/SIGINT)
EX_NOTHING: Final = 1  # `admin unban`/`ban`: nothing done (not banned; an exempt address)
EX_INVALID: Final = 1  # `verify-identity`: the signature is not valid (the reason is on stderr)
EX_USAGE: Final = 64  # bad arguments; `hash-password`: empty password, mismatch, bad algorithm;
# `admin`: the API refused the request as malformed (an address that is not one)
EX_DATAERR: Final = 65  # `hash-password`: the password on stdin is not UTF-8
EX_UNAVAILABLE: Final = 69  # `admin`: the admin API cannot be reached (or failed)
EX_SOFTWARE: Final = 70  # `run` with workers: workers kept dying (the supervisor gave up)
EX_OSERR: Final = 71  # the OS refused: a listener cannot be bound (port in use)
EX_CANTCREAT: Final = 73  # `gen-key`: the key file exists already or cannot be created
EX_NOPERM: Final = 77  # `admin`: the admin API refused the token
EX_CONFIG: Final = 78  # the config file is unusable; every problem is on stderr; `admin`: no
# usable admin section, or a reload refused (the running configuration is kept)
