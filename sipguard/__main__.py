"""`python -m sipguard` runs the command-line interface."""

from __future__ import annotations

from sipguard.cli import main

raise SystemExit(main())
