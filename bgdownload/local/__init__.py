"""The local stack: Redis, a worker and the API server as detached processes on this machine."""

from bgdownload.local.procs import pid_alive
from bgdownload.local.runtime import pid_path, runtime_info, runtime_path
from bgdownload.local.stack import down, ensure_up, status
from bgdownload.local.token import read_token, token_path

__all__ = [
    "down",
    "ensure_up",
    "pid_alive",
    "pid_path",
    "read_token",
    "runtime_info",
    "runtime_path",
    "status",
    "token_path",
]
