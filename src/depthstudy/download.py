"""Fetch the CIFAR-10 archive over HTTP(S) or from a local copy, checksum it, and only then put it in place."""

import hashlib
import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from depthstudy.errors import UserError
from depthstudy.files import atomic_path

CHUNK = 1 << 20  # bytes per read: large enough for speed, small enough for a smooth progress bar
MIRROR_HINT = "to use a mirror or a copy you already have, set data.url to its URL, a file:// URL or a local path"


class _Retryable(Exception):
    """A transient failure (timeout, reset, dropped connection, HTTP 5xx): worth another try."""


def _copy(src: BinaryIO, dst: BinaryIO, total: int | None, desc: str) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` with a progress bar; return (bytes copied, md5 hex digest)."""
    md5 = hashlib.md5()
    size = 0
    # disable=None: a bar on a terminal, nothing in logs (so an error stays one line)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False, disable=None) as bar:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            md5.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return size, md5.hexdigest()


def _http_once(url: str, tmp: Path, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"User-Agent": "depthstudy"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            size, digest = _copy(response, out, total, Path(urllib.parse.urlparse(url).path).name)
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise _Retryable(f"HTTP {e.code} {e.reason}") from None
        raise UserError(f"{url}: HTTP {e.code} {e.reason}; {MIRROR_HINT}") from None
    except urllib.error.URLError as e:
        transient = isinstance(e.reason, (socket.timeout, TimeoutError, ConnectionError))
        if transient and not isinstance(e.reason, ConnectionRefusedError):
            raise _Retryable(str(e.reason)) from None
        raise UserError(f"cannot reach {url} ({e.reason}); {MIRROR_HINT}") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {e}") from None
    if total is not None and size != total:
        raise _Retryable(f"connection closed after {size} of {total} bytes")
    return size, digest


def _fetch_http(url: str, tmp: Path, timeout: float, retries: int, backoff: float) -> tuple[int, str]:
    for attempt in range(retries + 1):
        try:
            return _http_once(url, tmp, timeout)
        except _Retryable as e:
            if attempt == retries:
                raise UserError(f"download of {url} failed after {retries + 1} tries: {e}; {MIRROR_HINT}") from None
            wait = backoff * 2**attempt
            print(f"download of {url} failed ({e}); retrying in {wait:g} s", flush=True)
            time.sleep(wait)
    raise AssertionError("unreachable")


def local_path(url: str) -> Path | None:
    """The local file ``url`` names (a ``file://`` URL or a plain path), or None for http(s)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UserError(f"data.url: file:// URLs must name a local file, not host {parsed.netloc!r} ({url})")
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise UserError(f"data.url: unsupported scheme {parsed.scheme!r} in {url} (use http, https, file or a path)")
    return Path(url).expanduser()


def fetch(url: str, dest: Path, md5: str, *, timeout: float = 30.0, retries: int = 3, backoff: float = 2.0) -> None:
    """Fetch ``url`` to ``dest`` and verify its md5; on any failure ``dest`` is left untouched.

    ``url`` is http(s)://, file:// or a plain local path. ``timeout`` bounds the connect and each read (seconds);
    transient HTTP failures are retried ``retries`` times, waiting ``backoff``, 2·``backoff``, … seconds.
    """
    with atomic_path(dest) as tmp:
        path = local_path(url)
        if path is None:
            size, digest = _fetch_http(url, tmp, timeout, retries, backoff)
        else:
            if not path.exists():
                raise UserError(f"data.url: {path} does not exist; {MIRROR_HINT}")
            if not path.is_file():
                raise UserError(f"data.url: {path} is not a file")
            with open(path, "rb") as src, open(tmp, "wb") as out:
                size, digest = _copy(src, out, path.stat().st_size, path.name)
        if digest != md5.lower():
            raise UserError(
                f"{url}: md5 mismatch: expected {md5.lower()}, got {digest} ({size} bytes); "
                "the file is corrupt or not the CIFAR-10 binary archive"
            )

