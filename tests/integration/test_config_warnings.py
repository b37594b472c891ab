"""`sipguard run` logs the warnings `check-config` prints (issue 12): one `config_warning` line
each, at startup, before `started` — e.g. the missing nonce key, with how to make one.

Must never: use a non-loopback address, sleep to synchronise, leave the daemon running.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import V4, demo_config, free_port, hostport

pytestmark = pytest.mark.integration


def test_run_logs_the_config_warnings(daemon_factory: DaemonFactory) -> None:
    config = demo_config(
        listen=[f"udp://{hostport(V4, free_port('udp'))}"],
        upstream=[f"sip:{hostport(V4, free_port('udp'))}"],
    )
    daemon = daemon_factory(config)
    events = daemon.logs()
    names = [event.get("event") for event in events]
    warnings = [event for event in events if event.get("event") == "config_warning"]
    assert {event.get("level") for event in warnings} == {"warning"}
    (nonce,) = [w["detail"] for w in warnings if "auth: no secret_file" in w["detail"]]
    assert nonce.startswith(f"{daemon.config_path}: auth: no secret_file or secret_env")
    assert "sipguard gen-key /etc/sipguard/nonce.key" in nonce
    # The harness writes the config (it holds a password) with the umask's mode: when that is
    # open to others, the mode warning is logged too; no other warning is.
    others = [w["detail"] for w in warnings if "auth: no secret_file" not in w["detail"]]
    mode = daemon.config_path.stat().st_mode & 0o777
    assert others == (
        [
            f"{daemon.config_path}: holds passwords or HA1 values and is mode "
            f"{mode:04o}: open to more users than its owner and group; chmod 0640 "
            "(or 0600)"
        ]
        if mode & 0o037
        else []
    )
    started = names.index("started")
    assert all(i < started for i, name in enumerate(names) if name == "config_warning")
