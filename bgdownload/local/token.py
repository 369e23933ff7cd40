"""The local stack's own API token: made once, kept in the state dir, readable only by its user.

The stack's server accepts it as owner ``local`` (docs/api.md §4, §17), so
another user of the machine, or a web page, cannot use the stack; the CLI,
the Python client and kernels read it from ``<state_dir>/token`` and nothing
changes for the user. A file that is not a regular file of this user with mode
0600 (or holds no token) is not trusted and is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from bgdownload.config import Settings, read_runtime_file

OWNER = "local"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")


def token_path(settings: Settings) -> Path:
    return settings.state_dir / "token"


def read_token(settings: Settings) -> str | None:
    """The stack's token; None when there is none or the file is not private to this user."""
    try:
        fd = os.open(token_path(settings), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, encoding="ascii", errors="replace") as handle:
        info = os.fstat(handle.fileno())
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid()
                or info.st_mode & 0o077):
            return None
        text = handle.read(256).strip()
    return text if _TOKEN.fullmatch(text) else None


def ensure_token(settings: Settings) -> str:
    """The stack's token, made now when there is none to trust. Call under the ``up`` lock."""
    token = read_token(settings)
    if token is not None:
        return token
    token = secrets.token_urlsafe(32)
    _write_private(token_path(settings), token)
    return token


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` created 0600 (never wider, whatever the umask), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash of a process that had this pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # readers see the old token or the new one, never half
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fingerprint(token: str) -> str:
    """What the runtime record keeps to tell which token its server runs with (not the token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def server_tokens(settings: Settings, token: str) -> str:
    """``BGDOWNLOAD_TOKENS`` for the stack's server: the configured tokens plus ``token:local``.

    A configured entry with a comma can only come from ``BGDOWNLOAD_TOKENS_FILE``,
    which the server still reads; the others are repeated here because this
    value replaces the caller's ``BGDOWNLOAD_TOKENS`` in the server's environment.
    """
    entries = [f"{t}:{owner}" for t, owner in settings.tokens.items()
               if "," not in t and "," not in owner]
    return ",".join([*entries, f"{token}:{OWNER}"])


def token_for(settings: Settings, api_url: str) -> str | None:
    """The stack's token when ``api_url`` is where the local stack serves (same loopback port)."""
    recorded = read_runtime_file(settings.runtime_file).get("api_url")
    if not isinstance(recorded, str) or not _same_local_server(recorded, api_url):
        return None
    return read_token(settings)


def _same_local_server(recorded: str, wanted: str) -> bool:
    try:
        a, b = urlsplit(recorded), urlsplit(wanted)
        same_port = a.port is not None and a.port == b.port
    except ValueError:
        return False
    return same_port and _is_loopback(a.hostname) and _is_loopback(b.hostname)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
