"""A real TLS SIP client through a TLS-only sipguard: baresip registers, calls, is hung up on.

Owns: the end-to-end TLS contract with a client that is not our own bridge (issue 12 item 4):
baresip (Debian's `baresip-core`, headless: `-f DIR -t SECONDS -e "/dial ..."`, verifying our
trustme certificate through `sip_cafile`) registers with digest over TLS, places a call that
the upstream (a SIPp UAS over UDP, TCP, or TLS through `TlsBridge`) answers and then ends with
a BYE that sipguard carries back over the client's TLS connection, and unregisters when it
quits. sipguard listens on TLS only: it reaches the upstream through its own sockets.
Must never: use a non-loopback address, sleep to synchronise, leave a process running (baresip
runs under coreutils `timeout` and quits by itself after `-t`).

RFC 3261 §10 (REGISTER), §22 (digest), §26.2 (SIP over TLS), §12.1.1 and §16.12 (the upstream's
BYE routed by our Record-Route).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.harness import (
    PASSWORD,
    USER,
    V4,
    V6,
    Kind,
    Sipp,
    TlsBridge,
    TlsFiles,
    demo_config,
    free_port,
    free_port_run,
    hostport,
    received_requests,
    received_statuses,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration

BARESIP = shutil.which("baresip")
RUN_SECONDS = 4  # baresip's -t: registration, call and the upstream's BYE take well under 1 s


def baresip_dir(directory: Path, tls: TlsFiles, host: str, proxy_port: int) -> Path:
    """A baresip configuration: TLS only, our CA trusted, PCMU with a sine as the microphone
    (no sound device), one account registering through sipguard."""
    directory.mkdir(parents=True)
    # baresip binds UDP and TCP on the port and its TLS transport on the next one
    listen = hostport(host, free_port_run(2, host))
    proxy = f"sip:{hostport(host, proxy_port)};transport=tls"
    (directory / "config").write_text(
        "\n".join(
            [
                f"sip_listen\t{listen}",
                f"sip_cafile\t{tls.ca_cert}",
                "sip_trans_def\ttls",
                "module_path\t/usr/lib/baresip/modules",
                "module\tg711.so",
                "module\tausine.so",
                "module\taufile.so",
                "audio_source\tausine,440",
                "audio_player\taufile,/dev/null",
                "ausrc_srate\t48000",
                "auplay_srate\t48000",
                "ausrc_channels\t2",
                "auplay_channels\t2",
                "module_app\taccount.so",
                "module_app\tmenu.so",
                "",
            ]
        )
    )
    (directory / "accounts").write_text(
        f"<sip:{USER}@{hostport(host, proxy_port)};transport=tls>;auth_pass={PASSWORD};"
        f'regint=600;outbound="{proxy}"\n'
    )
    return directory


@pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (scripts/_setup.sh does)")
@pytest.mark.parametrize(
    ("upstream", "host"),
    [("udp", V4), ("tcp", V4), ("tls", V4), ("udp", V6)],
    ids=["udp-v4", "tcp-v4", "tls-v4", "udp-v6"],
)
def test_baresip_registers_and_calls_over_tls(
    sipp: Sipp,
    daemon_factory: DaemonFactory,
    tls_files: TlsFiles,
    tmp_path: Path,
    upstream: str,
    host: str,
) -> None:
    assert BARESIP is not None
    uas_kind: Kind = "udp" if upstream == "udp" else "tcp"
    uas = sipp.start_uas(
        "uas_register_and_hangup.xml", host, transport="u1" if uas_kind == "udp" else "t1"
    )
    up_port = uas.port
    terminator = None
    if upstream == "tls":
        terminator = TlsBridge(host, uas.port, None, server_context=tls_files.server_context())
        up_port = terminator.port
    try:
        port = free_port("tcp", host)
        config = demo_config(
            listen=[f"tls://{hostport(host, port)}"],  # TLS only
            upstream=[f"sip:{hostport(host, up_port)};transport={upstream}"],
            tls=tls_files,
        )
        config["tls"]["ca_file"] = str(tls_files.ca_cert)
        daemon = daemon_factory(config)
        directory = baresip_dir(tmp_path / "baresip", tls_files, host, port)
        dial = f"/dial sip:service@{hostport(host, port)}"
        command = ["timeout", "-k", "3", str(RUN_SECONDS + 20), BARESIP, "-f", str(directory)]
        command += ["-t", str(RUN_SECONDS), "-e", dial]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS + 30,
            check=False,
        )
        output = "\n".join(x for x in done.stdout.splitlines() if not x.startswith("/"))
        explain = (
            f"baresip exited {done.returncode}\n{output}\n{done.stderr}\n--- sipguard ---\n"
            + daemon.describe()
            + "\n--- upstream ---\n"
            + uas.messages()[-3000:]
        )
        assert done.returncode == 0, explain
        assert "/TLS/" in output and "200 OK" in output, explain  # registered over TLS
        assert "Call established" in output, explain
        # The upstream saw both registrations (add, then remove on quit) and the call, and got
        # the client's 200 for the BYE it sent through sipguard.
        wait_for(lambda: received_statuses(uas.messages()) == [200], 5, "the 200 for the BYE")
        assert received_requests(uas.messages()) == ["REGISTER", "INVITE", "ACK", "REGISTER"]
        admitted = [e for e in daemon.logs() if e.get("event") == "admitted"]
        assert {e["method"] for e in admitted} == {"REGISTER", "INVITE"}, explain
        assert all(e["transport"] == "tls" for e in admitted), explain
        assert daemon.find_event("upstream_error") is None, explain
    finally:
        if terminator is not None:
            terminator.close()
