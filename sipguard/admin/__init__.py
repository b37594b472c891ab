"""The admin API (issue 17): live state an operator can read and change without editing files.

Owns: `views` (the JSON shapes, the address and duration checks, the `AdminBackend` protocol the
daemon implements), `api` (the aiohttp application on its own listener: bearer token, bounds,
routes), `daemon` (the backend of the running daemon: core, server, observer) and `client` (the
`sipguard admin` command, a plain HTTP client reading only the `admin` section of the config).

Never does: touch the SIP hot path. The listener is started only when `admin` is configured,
aiohttp is imported only then, and a request reaches the core through a few method calls
(list, ban and unban a source; read a trunk's counters) between two SIP messages.
"""
