"""`sipguard gen-key FILE`: write a new nonce key for `auth.secret_file` (shell).

Owns: making the key and writing it safely. The file holds 32 random bytes (256 bits, from the
OS's CSPRNG via `secrets`) hex-encoded: 64 characters and a newline, the same form as
`openssl rand -hex 32 > FILE`. The loader strips the newline and uses the 64 characters as the
HMAC key, so the file can be copied, compared and checked with ordinary text tools.

The file is created mode 0600 whatever the umask, and never replaces an existing file (a new key
invalidates every outstanding nonce, and instances sharing a key would stop agreeing): it is
opened with O_CREAT|O_EXCL|O_NOFOLLOW. The key is never printed.

Never does: overwrite, follow a symlink, print the key, change the file's owner or group.
"""

from __future__ import annotations

import os
import secrets

KEY_BYTES = 32  # 256 bits; the loader demands at least 16 bytes of key
FILE_MODE = 0o600


def new_key() -> bytes:
    """A fresh key as written to the file: 64 hex digits and a newline."""
    return secrets.token_hex(KEY_BYTES).encode("ascii") + b"\n"


def write_key(path: str) -> None:
    """Create `path` holding a new key. Raises FileExistsError when it exists (or is a
    symlink), OSError when it cannot be created; never leaves a partial file behind."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask can only have narrowed it; make it exact
        data = new_key()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
