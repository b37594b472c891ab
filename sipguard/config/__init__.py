"""Loading and validating the YAML configuration into frozen `Settings` (DESIGN §3, contract).

Owns: reading the config file (and the secret, password and TLS files it names), YAML with the
safe loader, validation that reports EVERY problem at once as `FILE: key.path: what is wrong`,
load-time warnings, and the `sipguard check-config FILE` command.

Never does: start listeners, open sockets, log (the caller logs problems and warnings), print a
secret. Values that are secret (passwords, HA1, the nonce key) are never quoted in a message, not
even when they have the wrong type.

Rules worth knowing:
- YAML 1.1 traps are errors, not guesses: an unquoted `1:20` is the integer 80 (base 60), `010`
  is 8 (octal), `on`/`yes` are true, an unquoted `*` starts an alias. Where a string is meant, a
  string is demanded, and the message says to quote the value.
- Unknown keys are errors (with the closest known key suggested); duplicate keys are errors
  (PyYAML would silently keep the last one).
- Key paths count list items from 0: `trunks[1]` is the second trunk.
- Relative file paths in the config (secret_file, password_file, tls.*) are relative to the
  directory of the config file.
- Secret, password and certificate files are read at load, hence again on every reload.
- Files holding a secret (and the config itself when it holds a password or HA1) more open than
  0640 are warned about, not refused: the daemon's user and group are the operator's business.

The package, by layer:
- `reader`: `Reader`, typed access with key paths (mapping, string, choice, integer, number,
  boolean, string_list, algorithms, ip_literal, port, timestamp) collecting errors and warnings;
- `document`: the file and YAML (syntax errors, duplicate keys);
- `secrets`: the nonce key, credential secrets (password, ha1, password_env, password_file),
  small secret files, and warnings for files holding a secret that are more open than 0640;
- one module per group of sections: `network` (listen, tls, upstream), `auth` (auth, trunks,
  credentials), `observability` (metrics, log), `protection` (limits, protection), `admin`
  (the admin API's listener and token), `identity` (identity, and the trunk sub-key `attributes`
  that `auth` lists: a layer below the others);
- `tenants`: a trunk's `limits` (a trunk sub-key, read by `auth`);
- `load`: the table of sections and the entry points.

Extending it:
- A new top-level section is a new module with a reader
  `read_x(r: Reader, value: object, done: Mapping[str, Any]) -> X | None` (report problems
  through `r`, return None when there were any) plus ONE entry `Section("x", read_x)` in
  `load.SECTIONS`; the `Settings` field of the same name receives the value. `absent=` is what
  the reader gets when the key is missing (None by default); `done` holds the sections read
  before it (mark a section `early=True` when one listed before it reads it).
- A new optional trunk sub-key is ONE entry in `auth.TRUNK_KEYS` (key -> reader of
  `(r, value, key_path)`); the `Trunk` field of the same name receives the value.
"""

from __future__ import annotations

from sipguard.config.load import (
    SECTIONS,
    Section,
    check_config_command,
    load_admin_settings,
    load_settings,
    load_settings_with_warnings,
)

__all__ = [
    "SECTIONS",
    "Section",
    "check_config_command",
    "load_admin_settings",
    "load_settings",
    "load_settings_with_warnings",
]
