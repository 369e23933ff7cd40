"""Whose folder a file goes to: each owner's own folder under the root, ``local`` the root itself.

With tokens configured every owner downloads into ``<root>/<folder>/``
(docs/api.md §17). The folder is the owner name made safe on every file system
(lower-case letters, digits, ``.``, ``_``, ``-``; at most 64 characters) and, when
that changed anything, a short hash of the real name after it, so two owners never
share a folder: ``alice`` → ``alice``, ``Alice`` → ``alice-3bc5106297``.
"""

from __future__ import annotations

import hashlib
import re

#: the owner of single-user mode (docs/api.md §4): its files are in the root itself
LOCAL_OWNER = "local"

_SAFE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_UNSAFE_CHARS = re.compile(r"[^a-z0-9._-]+")
#: what a folder that already carries a hash looks like: a plain name like it gets one too
_HASHED = re.compile(r".*-[0-9a-f]{10}")
_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?")


def owner_folder(owner: str) -> str:
    """The folder of ``owner``'s files relative to the root; ``""`` for ``local`` (the root).

    >>> owner_folder("alice"), owner_folder("local")
    ('alice', '')
    >>> owner_folder("Bob Smith")
    'bob_smith-7e3d898113'
    """
    if owner == LOCAL_OWNER:
        return ""
    if (_SAFE.fullmatch(owner) and not _HASHED.fullmatch(owner)
            and not _WINDOWS_DEVICES.fullmatch(owner)):
        return owner
    digest = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = _UNSAFE_CHARS.sub("_", owner.lower()).strip("._-")[:48] or "owner"
    return f"{stem}-{digest}"
