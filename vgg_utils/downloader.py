"""One file over HTTP, the reliable way: resumable, checksum-verified, atomic.

The engine of ``vgg-course fetch`` (:mod:`vgg_utils.fetch`), written for workshops on bad wifi.
A download goes to ``NAME.part`` beside its target and is renamed into place with
:func:`os.replace` only after its checksum matched, so a loader never finds half a file. A
connection that breaks off leaves the ``.part`` file; the next attempt (a retry, or the same
command run again) asks the server for the rest with an HTTP ``Range`` request and starts over
when the server does not support that. A server that stops sending is abandoned after ``stall``
seconds. Used in the set-up section of the README; no notebook teaches it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .runtime import progress_bar

MB = 1_000_000
_CHUNK = 1 << 20
_USER_AGENT = "vgg-course"


class DownloadError(RuntimeError):
    """A download failed; the message says what happened and what was kept."""


class ChecksumError(DownloadError):
    """A downloaded or cached file is not the published one; nothing was kept."""


@dataclass(frozen=True)
class RemoteFile:
    """A published file: where it is, its name on disk, and the checksum it must have.

    ``md5``: the full MD5 hex digest (torchvision publishes these for its datasets).
    ``sha256_prefix``: the start of the SHA-256 hex digest (torchvision's weight files carry
    one in their names, ``vgg16-397923af.pth``, which torch.hub checks the same way).
    ``approx_bytes``: for the size shown before a download starts (the server's length decides).
    """

    url: str
    filename: str
    md5: str | None = None
    sha256_prefix: str | None = None
    approx_bytes: int = 0

    def __post_init__(self) -> None:
        if not (self.md5 or self.sha256_prefix):
            raise ValueError(f"{self.filename}: give md5 or sha256_prefix (a download must be checkable)")

    def problem(self, path: str | os.PathLike) -> str | None:
        """``None`` when the file at ``path`` has the published checksum, else what is wrong."""
        if self.md5:
            digest = file_digest(path, "md5")
            if digest != self.md5.lower():
                return f"MD5 {digest} instead of the published {self.md5}"
        if self.sha256_prefix:
            digest = file_digest(path, "sha256")
            if not digest.startswith(self.sha256_prefix.lower()):
                return f"SHA-256 {digest[:12]}... instead of the published {self.sha256_prefix}..."
        return None


def sha256_prefix_of(filename: str) -> str:
    """The hash prefix in a torch.hub file name (``vgg16-397923af.pth`` -> ``397923af``)."""
    match = re.search(r"-([a-f0-9]{6,})\.", filename)  # torch.hub's HASH_REGEX, at least 6 digits
    if not match:
        raise ValueError(f"{filename!r} carries no hash prefix (expected NAME-<hex>.EXT)")
    return match.group(1)


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def part_path(dest: str | os.PathLike) -> Path:
    """Where the download of ``dest`` is written until it is verified: ``dest`` + ``.part``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


class _CutOff(DownloadError):
    """The body ended before its announced length (the connection dropped)."""


def _transfer(url: str, part: Path, *, stall: float, progress: bool, desc: str) -> None:
    """Append the rest of ``url`` to ``part`` (or rewrite it when the server ignores ``Range``)."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=stall)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing after byte `have`: the part is complete (or foreign)
            return
        raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}") from err
    with response:
        resumed = have > 0 and response.status == 206 and (
            response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        )
        start = have if resumed else 0  # a 200 is the whole file: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        bar = progress_bar(-(-(total or 0) // MB), progress, desc, unit="MB")
        if bar is not None and start:
            bar.update(start // MB)
        done_mb = start // MB
        received = start
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while chunk := response.read1(_CHUNK):  # what has arrived: kept if the next read stalls
                    f.write(chunk)
                    received += len(chunk)
                    if bar is not None and received // MB > done_mb:
                        bar.update(received // MB - done_mb)
                        done_mb = received // MB
        finally:
            if bar is not None:
                bar.close()
        if total is not None and received < total:
            raise _CutOff(f"the connection closed after {received:,} of {total:,} bytes")


def download(
    remote: RemoteFile,
    dest: str | os.PathLike,
    *,
    stall: float = 30.0,
    retries: int = 2,
    progress: bool = True,
    desc: str | None = None,
) -> Path:
    """Download ``remote`` to ``dest``: via ``dest.part``, resumed after a cut, verified, renamed.

    A dropped connection or a stall of ``stall`` seconds is retried ``retries`` times, each
    resuming where the last stopped; if all fail, :class:`DownloadError` says so and the
    ``.part`` file is kept for the next run to resume. A complete file with the wrong checksum
    raises :class:`ChecksumError` and is deleted (nothing is kept). Returns ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    leftover = part.is_file()  # from an interrupted run: resumed below, but it may be stale
    for attempt in range(retries + 1):
        try:
            _transfer(remote.url, part, stall=stall, progress=progress, desc=desc or remote.filename)
            break
        except (OSError, http.client.HTTPException, _CutOff) as err:
            if attempt == retries:
                kept = part.stat().st_size if part.is_file() else 0
                raise DownloadError(
                    f"the download of {remote.filename} from {remote.url} failed after "
                    f"{retries + 1} attempts ({type(err).__name__}: {err}); "
                    + (f"the {kept:,} bytes received are kept in {part}: run the same command again to resume"
                       if kept else "nothing was kept")  # fmt: skip
                ) from err
    problem = remote.problem(part)
    if problem is not None:
        part.unlink()
        if leftover:  # the leftover was of another file (or damaged): once more from scratch
            return download(remote, dest, stall=stall, retries=retries, progress=progress, desc=desc)
        raise ChecksumError(
            f"{remote.filename} from {remote.url} is not the published file ({problem}); it was "
            "deleted, nothing was kept. A captive portal, a proxy's error page or a damaged mirror "
            "sends such files: run again on another network"
        )
    os.replace(part, dest)  # atomic: the loader sees the old file or the verified new one
    return dest
