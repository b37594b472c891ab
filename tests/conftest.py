"""Shared test fixtures: where the test corpora live (``tests/data``, inside the repository).

The corpora are checked against ``tests/data/MANIFEST.sha256`` once per run: a missing or altered
file stops the run at collection with the files named, so a partial checkout never passes as a
smaller suite.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest
import trustme

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT / "tests" / "data"
MANIFEST = CORPORA / "MANIFEST.sha256"


def missing_corpus_files() -> list[str]:
    """Every manifest entry that is absent or whose bytes differ, as 'path: why'."""
    if not MANIFEST.is_file():
        return [f"{MANIFEST}: the manifest itself is missing"]
    problems = []
    for line in MANIFEST.read_text(encoding="ascii").splitlines():
        digest, _, name = line.partition("  ")
        path = CORPORA / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{path}: bytes differ from MANIFEST.sha256 (line ends converted?)")
    return problems


def pytest_sessionstart(session: pytest.Session) -> None:
    problems = missing_corpus_files()
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise pytest.UsageError(f"test data missing or altered under {CORPORA}:\n  {shown}{more}")


@pytest.fixture(scope="session")
def corpora() -> Path:
    return CORPORA


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 from a fresh CA, and a client context
    that trusts that CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client
