"""The safety rules of docs/api.md §5 in one import: URLs, destination addresses, file names.

The rules themselves live by concept — :mod:`bgdownload.engine.urls`,
:mod:`bgdownload.engine.addresses`, :mod:`bgdownload.engine.names`,
:mod:`bgdownload.storage.names` and :mod:`bgdownload.storage.files` (paths inside
the download root); this module gathers them for the callers that check all of
them, such as the service validating a new job.
"""

from bgdownload.engine.addresses import (
    IPAddress,
    address_blocked,
    check_address,
    check_literal_host,
    literal_host_address,
    resolve_and_check,
)
from bgdownload.engine.names import (
    choose_filename,
    filename_from_content_disposition,
    filename_from_url,
)
from bgdownload.engine.urls import url_host_port, validate_url
from bgdownload.storage.files import (
    PART_SUFFIX,
    SIDECAR_SUFFIX,
    part_path,
    reserve_unique_name,
    safe_path,
    sidecar_path,
)
from bgdownload.storage.names import FALLBACK_NAME, MAX_NAME_BYTES, sanitize_filename, split_ext

__all__ = [
    "FALLBACK_NAME",
    "MAX_NAME_BYTES",
    "PART_SUFFIX",
    "SIDECAR_SUFFIX",
    "IPAddress",
    "address_blocked",
    "check_address",
    "check_literal_host",
    "choose_filename",
    "filename_from_content_disposition",
    "filename_from_url",
    "literal_host_address",
    "part_path",
    "reserve_unique_name",
    "resolve_and_check",
    "safe_path",
    "sanitize_filename",
    "sidecar_path",
    "split_ext",
    "url_host_port",
    "validate_url",
]
