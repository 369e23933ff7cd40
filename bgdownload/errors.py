"""One exception hierarchy for everything bgdownload raises.

Every error carries the API error ``code`` of docs/api.md §6 and, for request
errors, the HTTP ``status`` the web layers answer with::

    BgdownloadError                      code "internal", 500
    ├── ConfigError                      a BGDOWNLOAD_* setting is malformed
    ├── RequestError                     the caller asked for something wrong
    │   ├── InvalidRequest               400 invalid_request
    │   ├── Unauthorized                 401 unauthorized
    │   ├── NotFound                     404 not_found
    │   ├── InvalidState                 409 invalid_state
    │   ├── PayloadTooLarge              413 payload_too_large
    │   ├── InvalidURL                   422 invalid_url
    │   ├── BlockedDestination           422 blocked_destination
    │   └── RateLimited                  429 rate_limited (carries retry_after)
    ├── DownloadError                    a job failed; code goes into job.error
    │   ├── HTTPStatusError              http_error (transient for 5xx/408/429)
    │   ├── NetworkError                 network_error (transient)
    │   ├── TooLarge                     too_large
    │   ├── ChecksumMismatch             checksum_mismatch
    │   ├── PartialFailure               partial (batch: some files failed)
    │   ├── StorageError                 storage_error (the destination cannot be written)
    │   └── Cancelled                    cancelled
    ├── IllegalTransition                the state machine refused a change
    ├── JobGone                          the job was deleted while being changed (a worker stops)
    ├── DownloadFailed                   client side: job.wait() saw a failed job
    ├── ServerUnavailable                client side: the API could not be reached (unavailable)
    └── WaitTimeout                      client side: job.wait(timeout=…) ran out (timeout)
"""

from __future__ import annotations

from typing import Any, ClassVar


class BgdownloadError(Exception):
    """Root of every bgdownload error."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]

    def to_dict(self) -> dict[str, str]:
        """The ``{"code", "message"}`` object used in error bodies and job.error."""
        return {"code": self.code, "message": self.message}


class ConfigError(BgdownloadError):
    """A setting (environment variable or settings file) has a bad value."""

    code = "invalid_config"


class RequestError(BgdownloadError):
    """Base of errors caused by what the caller asked for."""

    code = "invalid_request"
    status = 400


class InvalidRequest(RequestError):
    code = "invalid_request"
    status = 400


class Unauthorized(RequestError):
    code = "unauthorized"
    status = 401


class NotFound(RequestError):
    code = "not_found"
    status = 404


class InvalidState(RequestError):
    code = "invalid_state"
    status = 409


class PayloadTooLarge(RequestError):
    code = "payload_too_large"
    status = 413


class InvalidURL(RequestError):
    code = "invalid_url"
    status = 422


class BlockedDestination(RequestError):
    code = "blocked_destination"
    status = 422


class RateLimited(RequestError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DownloadError(BgdownloadError):
    """A download failed; ``transient`` ones are retried with backoff."""

    transient: bool = False


class HTTPStatusError(DownloadError):
    code = "http_error"

    def __init__(self, status_code: int, *, retry_after: float | None = None) -> None:
        super().__init__(f"source answered HTTP {status_code}")
        self.status_code = status_code
        self.retry_after = retry_after
        self.transient = status_code >= 500 or status_code in (408, 429)


class NetworkError(DownloadError):
    code = "network_error"
    transient = True


class TooLarge(DownloadError):
    code = "too_large"


class ChecksumMismatch(DownloadError):
    code = "checksum_mismatch"


class PartialFailure(DownloadError):
    code = "partial"


class StorageError(DownloadError):
    """The destination cannot be written: permissions, read-only, disk full, name too long.

    Never transient: retrying cannot free space or change permissions. The message
    names the file relative to the download root, never an absolute server path.
    """

    code = "storage_error"

    def __init__(self, message: str, *, keep_partial: bool = False) -> None:
        super().__init__(message)
        #: the partial data stays good (disk full): kept, so a retry resumes it
        self.keep_partial = keep_partial


class Cancelled(DownloadError):
    code = "cancelled"


class IllegalTransition(BgdownloadError):
    """A state change the job state machine (docs/api.md §1) does not allow."""

    code = "invalid_state"
    status = 409


class JobGone(BgdownloadError):
    """The job was deleted while it was being changed, e.g. while a worker ran it.

    Not a request error: the API answers a deleted job with :class:`NotFound` before
    it gets here; this is the race that leaves the worker nothing to report to.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} no longer exists")
        self.job_id = job_id


class DownloadFailed(BgdownloadError):
    """Raised by ``Job.wait()`` when the job ends ``failed`` or ``cancelled``."""

    def __init__(self, message: str, *, code: str = "internal", job: Any = None) -> None:
        super().__init__(message, code=code)
        self.job = job


class ServerUnavailable(BgdownloadError):
    """The client could not reach the API (refused, unresolvable, timed out, 5xx)."""

    code = "unavailable"
    status = 503


class WaitTimeout(BgdownloadError, TimeoutError):
    """``Job.wait(timeout=...)`` gave up before the job reached a terminal state."""

    code = "timeout"
