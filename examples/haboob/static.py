"""Serving files safely from a document root: request targets, path resolution, file metadata.

Two steps, so that the event loop never touches the file system:

* :func:`parse_target` (pure, cheap; the ``parse`` stage) turns a raw request target into the
  canonical key of a file below the root, or refuses it: ``..`` segments, encoded slashes and
  backslashes, NUL and other control bytes, bad percent-escapes or UTF-8 are ``400``; hidden
  names (a segment starting with ``.``) are ``404``. The key is the cache's key.
* :func:`load` (blocking: the ``read`` stage's threads) resolves the key under the root,
  following symlinks only while they stay inside it, refuses what is not a regular file, and
  reads it into a :class:`Page`.

Every refusal is a :class:`Refused` carrying the HTTP status, so callers turn it into a
response instead of an error.
"""

from __future__ import annotations

import email.utils
import os
import re
import stat
from dataclasses import dataclass

__all__ = [
    "CONTENT_TYPES",
    "Page",
    "Refused",
    "Target",
    "content_type",
    "load",
    "not_modified",
    "parse_target",
]

#: Content types by extension (lower case); anything else, including names without an
#: extension (the SPECweb99 files), is ``application/octet-stream``.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".pdf": "application/pdf",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".tar": "application/x-tar",
}
DEFAULT_TYPE = "application/octet-stream"
INDEX = "index.html"

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# NUL, the other C0 controls, DEL, the path separators: never part of a file name we serve.
_FORBIDDEN = frozenset(range(0x20)) | {0x7F, ord("/"), ord("\\")}


class Refused(Exception):
    """A request target or file this server will not serve.

    Attributes:
        status: the HTTP status to answer (400, 403, 404, or 301 for a directory without its
            slash, with ``location`` set).
        reason: a few words for the response body and the log.
        location: where a 301 points.
    """

    def __init__(self, status: int, reason: str, location: str | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.location = location


@dataclass(frozen=True, slots=True)
class Target:
    """A request target, checked and made canonical.

    Attributes:
        key: the canonical URL path (``/a/b``, ``/a/`` for a directory asked for with its
            slash); the page cache's key.
        segments: its decoded segments (no ``.``, ``..`` or empty ones).
        query: the raw query string (without ``?``), kept for redirects.
    """

    key: str
    segments: tuple[str, ...]
    query: str = ""

    @property
    def slash(self) -> bool:
        """Whether the target ends with ``/`` (asks for a directory)."""
        return self.key.endswith("/")


def parse_target(raw: str, *, allow_hidden: bool = False) -> Target:
    """Check a raw request target and make it canonical (pure; no file system access).

    Accepts origin form (``/a/b?q``) and absolute form (``http://host/a/b``). Empty and ``.``
    segments are dropped (``//etc/passwd`` is ``/etc/passwd`` *below the root*).

    Raises:
        Refused: 400 for a target that is not a path, a ``..`` segment, an encoded slash or
            backslash, a raw backslash, NUL or another control byte, a bad percent-escape,
            a fragment, or a name that is not UTF-8; 404 for a hidden name (``.git``,
            ``.env``) unless ``allow_hidden``.
    """
    path, _, query = raw.partition("?")
    lowered = path[:8].lower()
    if lowered.startswith(("http://", "https://")):
        rest = path[path.index("//") + 2 :]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    if not path.startswith("/"):
        raise Refused(400, "the request target is not a path")
    if "#" in path:
        raise Refused(400, "a fragment in the request target")
    if "\\" in path:
        raise Refused(400, "a backslash in the path")
    try:
        raw_bytes = path.encode("ascii")
    except UnicodeEncodeError:
        raise Refused(400, "a non-ASCII byte in the request target") from None
    if _BAD_ESCAPE.search(raw_bytes):
        raise Refused(400, "a bad percent-escape in the path")
    segments: list[str] = []
    pieces = raw_bytes.split(b"/")[1:]
    for piece in pieces:
        decoded = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), piece)
        if not _FORBIDDEN.isdisjoint(decoded):
            raise Refused(400, "an encoded slash, backslash or control byte in the path")
        try:
            name = decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(400, "a path that is not UTF-8") from None
        if name in ("", "."):
            continue
        if name == "..":
            raise Refused(400, "a '..' segment in the path")
        if name.startswith(".") and not allow_hidden:
            raise Refused(404, "not found")
        segments.append(name)
    slash = bool(segments) and pieces[-1] in (b"", b".")
    key = "/" + "/".join(segments) + ("/" if slash else "")
    return Target(key, tuple(segments), query)


def content_type(name: str) -> str:
    """The Content-Type for a file name, from its extension."""
    _, dot, ext = name.rpartition(".")
    if not dot or "/" in ext:
        return DEFAULT_TYPE
    return CONTENT_TYPES.get("." + ext.lower(), DEFAULT_TYPE)


@dataclass(frozen=True, slots=True)
class Page:
    """A file's content and the metadata a response needs.

    Attributes:
        key: the canonical URL path it answers.
        body: the whole content.
        content_type: from the file's extension.
        mtime: modification time (seconds since the epoch).
        etag: a strong validator made of the size and the modification time.
        last_modified: ``mtime`` as an HTTP date.
    """

    key: str
    body: bytes
    content_type: str
    mtime: float
    etag: str
    last_modified: str

    @property
    def size(self) -> int:
        """Bytes in the body."""
        return len(self.body)


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root if root.endswith(os.sep) else root + os.sep)


def load(root: str, target: Target, *, max_bytes: int = 1 << 30) -> Page:
    """Resolve ``target`` under ``root`` and read the file (blocking: call it on a thread).

    Symlinks are followed while the file they lead to stays inside the root: the fully
    resolved path must be the root or below it. A directory is served through its
    ``index.html``; asked for without its trailing slash, it is a redirect.

    Args:
        root: the document root, an absolute path with its symlinks resolved
            (``os.path.realpath``).
        target: from :func:`parse_target`.
        max_bytes: the largest file served (it is read into memory whole).

    Raises:
        Refused: 404 for a missing file or a path leading outside the root; 403 for a
            directory without an index, a file that is not a regular file (a FIFO, a
            device), an unreadable file, or one larger than ``max_bytes``; 301 for a
            directory asked for without its slash.
    """
    real = os.path.realpath(os.path.join(root, *target.segments))
    if not _inside(real, root):
        raise Refused(404, "not found")
    try:
        info = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        raise Refused(404, "not found") from None
    except OSError:
        raise Refused(403, "forbidden") from None
    if stat.S_ISDIR(info.st_mode):
        if not target.slash:
            location = target.key + "/" + ("?" + target.query if target.query else "")
            raise Refused(301, "moved permanently", location)
        real = os.path.realpath(os.path.join(real, INDEX))
        if not _inside(real, root):
            raise Refused(403, "forbidden")
        name = INDEX
    else:
        name = target.segments[-1] if target.segments else INDEX
    try:
        # O_NONBLOCK: a FIFO swapped in after the check must not hang the thread on open().
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        if name == INDEX:  # a directory without an index: no listing
            raise Refused(403, "forbidden") from None
        raise Refused(404, "not found") from None
    except OSError:
        raise Refused(403, "forbidden") from None
    with open(fd, "rb", buffering=0) as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(403, "forbidden")
        if info.st_size > max_bytes:
            raise Refused(403, "too large to serve")
        body = file.read()
    etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
    last_modified = email.utils.formatdate(info.st_mtime, usegmt=True)
    return Page(target.key, body, content_type(name), info.st_mtime, etag, last_modified)


def not_modified(page: Page, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """Whether a conditional GET is answered with 304 (RFC 9110 section 13.2.2).

    ``If-None-Match`` wins when present (a list of entity tags or ``*``; weak comparison);
    otherwise ``If-Modified-Since`` is compared with the file's modification time, to the
    second. An unparsable date is ignored.
    """
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or any(tag.removeprefix("W/") == page.etag for tag in tags)
    if if_modified_since is not None:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:  # RFC 9110: an HTTP date is always UTC
            return False
        return int(page.mtime) <= since.timestamp()
    return False
