"""What a safe file name is: one path component, no tricks, at most 200 bytes (docs/api.md §5)."""

from __future__ import annotations

import re
import unicodedata

FALLBACK_NAME = "download"
MAX_NAME_BYTES = 200

_UNSAFE_CHARS = re.compile(r'[/\\\x00-\x1f\x7f<>:"|?*]')
#: characters drawn like a slash or backslash that NFC leaves alone
_SLASH_LOOKALIKES = re.compile("[\u2044\u2215\u2216\u29f5\u29f8\u29f9\ufe68\uff0f\uff3c]")
#: names Windows gives to devices, whatever the extension (``con.txt`` is the console too)
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{device}{n}" for device in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")}
)
_DOT_RUNS = re.compile(r"\.{2,}")
_COMPOUND_EXT = re.compile(r"(\.tar\.(?:gz|bz2|xz|zst|lz|lzma|z))$", re.IGNORECASE)
_MAX_EXT_BYTES = 24
#: an absolute POSIX path in a message: after a quote, a space or the start
_ABSOLUTE_PATH = re.compile(r"""(^|[\s'"(=])(/[^\s'")]+)""")


def split_ext(name: str) -> tuple[str, str]:
    """``"a.tar.gz"`` → ``("a", ".tar.gz")``; ``"README"`` → ``("README", "")``."""
    m = _COMPOUND_EXT.search(name)
    if m and m.start() > 0:
        return name[: m.start()], m.group(1)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def sanitize_filename(name: str | None, *, fallback: str = FALLBACK_NAME) -> str:
    """Make ``name`` a safe single path component (docs/api.md §5).

    No path separators or characters drawn like one, no ``..``, no control or
    bidi-override characters, no line or paragraph separators, no leading dot,
    no Windows device name (``CON.txt`` becomes ``_CON.txt``), at most 200 bytes
    of UTF-8 (the extension is kept). Returns ``fallback`` when nothing usable is left.
    Applying it twice changes nothing.

    >>> sanitize_filename("../../etc/passwd")
    'etc_passwd'
    """
    if not name:
        return fallback
    text = unicodedata.normalize("NFC", str(name))
    # Format characters (Cf) include right-to-left overrides that disguise extensions.
    text = "".join(_visible(c) for c in text)
    text = _UNSAFE_CHARS.sub("_", _SLASH_LOOKALIKES.sub("_", text))
    text = _DOT_RUNS.sub(".", text)
    text = text.strip().lstrip("._ ").rstrip(". ")
    text = re.sub(r"_{2,}", "_", text)
    if not text or set(text) <= {".", "_"}:
        return fallback
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        stem, ext = split_ext(text)
        if len(ext.encode("utf-8")) > _MAX_EXT_BYTES:
            stem, ext = text, ""
        stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(ext.encode("utf-8"))).rstrip(". ")
        text = (stem + ext) if stem else fallback
    if text.split(".")[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def without_paths(message: str, root: str) -> str:
    """``message`` with every absolute path under ``root`` made relative to it, and any
    other absolute path cut to its last component (docs/api.md §17: errors never show
    where the server keeps files)."""
    base = root.rstrip("/") + "/"
    message = message.replace(base, "").replace(root.rstrip("/"), ".")
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) + m.group(2).rsplit("/", 1)[-1], message)


def _visible(char: str) -> str:
    """Drop what is not drawn or draws something else; U+2028/U+2029 and odd spaces → a space."""
    category = unicodedata.category(char)
    if category in ("Cc", "Cf", "Cs", "Co"):
        # Format characters (Cf) include right-to-left overrides that disguise extensions.
        return ""
    if category in ("Zl", "Zp") or (category == "Zs" and char != " "):
        return " "
    return char
