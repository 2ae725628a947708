"""``vgg-course fetch``: pre-download the course's optional downloads for offline use.

What can be fetched (:func:`catalog`), each to exactly where its loader looks, so that after a
fetch the notebooks use it offline:

* ``cifar10``: torchvision's CIFAR-10 (python version), unpacked to
  ``cache_dir()/cifar-10-batches-py`` (what :func:`vgg_utils.load_cifar10` reads);
* ``vgg16`` (and, when named, ``vgg11``, ``vgg13``, ``vgg19`` and their ``_bn`` variants):
  torchvision's ImageNet weights, into torch.hub's ``checkpoints`` folder (what
  :func:`vgg_utils.load_pretrained` reads);
* ``flowers102``: Oxford 102 Flowers, unpacked to ``cache_dir()/flowers-102`` with the
  ``.complete`` marker :func:`vgg_utils.download_flowers102` writes.

Every file is checked against the checksum its publisher gives (torchvision's MD5 sums for the
datasets, the SHA-256 prefix in the weight file's name); downloads are resumable and atomic
(:mod:`vgg_utils.downloader`); a folder is assembled and checked in a scratch folder beside its
target and renamed into place. Items are data (:class:`Item`), so a test or a workshop mirror
(``--mirror URL``) can point them elsewhere; the checksums still decide. Used in the README's
set-up section; no notebook teaches it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .downloader import (
    MB,
    ChecksumError,
    DownloadError,
    RemoteFile,
    download,
    part_path,
    sha256_prefix_of,
)
from .runtime import cache_dir

#: What ``fetch --all`` fetches, in this order: what the notebooks use.
COURSE_ITEMS = ("cifar10", "vgg16", "flowers102")


class FetchError(RuntimeError):
    """Something could not be fetched; the message says what and what to do instead."""


@dataclass(frozen=True)
class Item:
    """Something ``fetch`` can download: its files, and where the course's loader looks for it.

    ``target``: the file (``folder=False``: a single file, e.g. weights) or the folder
    (``folder=True``: the downloaded archives are unpacked and the other files placed inside).
    ``members``: files inside the folder that must have these MD5 sums (relative paths).
    ``marker``: a file written last, as a record, inside the folder. ``approx_installed``: bytes on
    disk once unpacked (for the free-space check).
    """

    name: str
    what: str
    files: tuple[RemoteFile, ...]
    target: Path
    folder: bool = False
    members: dict[str, str] = field(default_factory=dict)
    marker: str | None = None
    approx_installed: int = 0
    without: str = ""  # what the notebooks do when it is absent

    @property
    def approx_bytes(self) -> int:
        return sum(f.approx_bytes for f in self.files)

    def with_mirror(self, base: str) -> Item:
        """The same item downloaded from ``base/<file name>`` (a local server in a workshop)."""
        files = tuple(dataclasses.replace(f, url=f"{base.rstrip('/')}/{f.filename}") for f in self.files)
        return dataclasses.replace(self, files=files)

    def download_path(self, remote: RemoteFile) -> Path:
        """Where a file is downloaded to: the target itself, or beside the folder (archives)."""
        return self.target.parent / remote.filename if self.folder else self.target


# --- the catalogue -------------------------------------------------------------------------------


def _cifar10_item() -> Item:
    from torchvision.datasets import CIFAR10

    from .data import CIFAR10_URL

    members = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    members[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return Item(
        "cifar10", "CIFAR-10, 60,000 32x32 images (torchvision's python version)",
        (RemoteFile(CIFAR10_URL, CIFAR10.filename, md5=CIFAR10.tgz_md5, approx_bytes=170_498_071),),
        cache_dir() / CIFAR10.base_folder, folder=True, members=members, approx_installed=186 * MB,
        without="notebooks 04, 06, 07 train and test on the built-in shapes instead",
    )  # fmt: skip


def _weights_item(name: str) -> Item:
    from .models import TORCHVISION_NAMES, torchvision_weights, weights_path

    config = {v: k for k, v in TORCHVISION_NAMES.items()}[name.removesuffix("_bn")]
    bn = name.endswith("_bn")
    weights = torchvision_weights(config, batch_norm=bn)
    target = weights_path(config, batch_norm=bn)
    approx = int(weights.meta.get("_file_size", 0) * 2**20)
    remote = RemoteFile(weights.url, target.name, sha256_prefix=sha256_prefix_of(target.name), approx_bytes=approx)
    return Item(
        name, f"torchvision's ImageNet weights for {name} (config {config}{' with batch norm' if bn else ''})",
        (remote,), target,
        without="notebooks 05-07 use the course's own models, 01-03 random weights" if name == "vgg16" else "",
    )  # fmt: skip


def _flowers102_item() -> Item:
    from .transfer_data import _MARKER, FOLDER, _flowers102

    flowers = _flowers102()
    sizes = {"image": 344_862_509, "label": 502, "setid": 14_989}
    files = tuple(
        RemoteFile(flowers._download_url_prefix + filename, filename, md5=md5, approx_bytes=sizes[key])
        for key, (filename, md5) in flowers._file_dict.items()
    )
    members = {filename: md5 for key, (filename, md5) in flowers._file_dict.items() if key != "image"}
    return Item(
        "flowers102", "Oxford 102 Flowers, 8,189 photos (notebook 06's online section)", files,
        cache_dir() / FOLDER, folder=True, members=members, marker=_MARKER, approx_installed=350 * MB,
        without="notebook 06 skips its Oxford Flowers section",
    )  # fmt: skip


#: Names ``fetch`` accepts besides :data:`COURSE_ITEMS`: the other ImageNet VGG weights.
EXTRA_WEIGHTS = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16_bn", "vgg19", "vgg19_bn")


def catalog(names: Sequence[str] | None = None, *, mirror: str | None = None) -> dict[str, Item]:
    """The fetchable items by name (default: :data:`COURSE_ITEMS`); ``mirror``: download every
    file from ``mirror/<file name>`` instead of its publisher (checksums unchanged)."""
    valid = COURSE_ITEMS + EXTRA_WEIGHTS
    names = list(names or COURSE_ITEMS)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"nothing called {', '.join(map(repr, unknown))} to fetch; valid names: {', '.join(valid)}")
    builders: dict[str, Callable[[], Item]] = {"cifar10": _cifar10_item, "flowers102": _flowers102_item}
    items = {n: builders[n]() if n in builders else _weights_item(n) for n in dict.fromkeys(names)}
    return {n: item.with_mirror(mirror) for n, item in items.items()} if mirror else items


# --- what is there -------------------------------------------------------------------------------


@dataclass
class Status:
    """``state``: ``"present"`` (verified), ``"missing"``, ``"partial"`` (a resumable ``.part``)
    or ``"damaged"`` (in place but failing its check); ``detail`` says more."""

    state: str
    detail: str = ""


def status(item: Item) -> Status:
    """Is the item where its loader looks, and does it pass its checksums? (Reads every file.)"""
    target = item.target
    if item.folder and target.is_dir():
        for name, md5 in item.members.items():
            path = target / name
            if not path.is_file():
                return Status("damaged", f"{path.name} is missing from {target}")
            problem = RemoteFile("", name, md5=md5).problem(path)
            if problem:
                return Status("damaged", f"{path.name}: {problem}")
        if item.marker and not (target / item.marker).is_file():
            return Status("damaged", f"{target} is incomplete (no {item.marker} marker)")
        return Status("present", "verified")
    if not item.folder and target.is_file():
        problem = item.files[0].problem(target)
        return Status("damaged", problem) if problem else Status("present", "verified")
    parts = [part_path(item.download_path(f)) for f in item.files]
    have = sum(p.stat().st_size for p in parts if p.is_file())
    if have:
        return Status("partial", f"{have / MB:.1f} of about {item.approx_bytes / MB:.0f} MB downloaded (resumable)")
    return Status("missing")


def _shown(path: Path) -> str:
    """A path as a reader finds it: inside the checkout relative to it, else from ``~``."""
    from .runtime import REPO_ROOT

    for base, prefix in ((REPO_ROOT, ""), (Path.home(), "~/")):
        if path.is_relative_to(base):
            return f"{prefix}{path.relative_to(base)}"
    return str(path)


def listing(items: dict[str, Item]) -> str:
    """A table of the items: size, where they go, whether they are there."""
    rows = [("name", "download", "where the course looks", "status")]
    for item in items.values():
        st = status(item)
        state = st.state + (f": {st.detail}" if st.detail and st.state != "present" else "")
        if st.state == "present":
            state = "present, checksum verified"
        elif item.without:
            state += f" ({item.without})"
        rows.append((item.name, f"{item.approx_bytes / MB:,.0f} MB", _shown(item.target), state))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    return "\n".join(lines) + f"\nalso on request: {', '.join(EXTRA_WEIGHTS)} (ImageNet weights of the other configurations)"


# --- fetching ------------------------------------------------------------------------------------


def _unreachable_hosts(items: Sequence[Item], timeout: float) -> set[str]:
    """Probe every host once, in parallel: offline costs ``timeout`` seconds, not one per file."""
    from .models import reachable_hosts

    answers = reachable_hosts([f.url for item in items for f in item.files], timeout)
    return {h for h, ok in answers.items() if not ok}


def _install_folder(item: Item, downloaded: list[Path], keep_archives: bool) -> None:
    """Unpack and place the files in a scratch folder beside the target, check every member,
    then swap it into place (a loader sees the old folder or the complete new one)."""
    target = item.target
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-partial-", dir=target.parent))
    try:
        for path in downloaded:
            if path.name.endswith((".tar.gz", ".tgz", ".tar")):
                with tarfile.open(path) as tar:
                    # "data" filter: no absolute paths or links out (Python >= 3.10.12 has it)
                    tar.extractall(scratch, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            else:
                shutil.copy2(path, scratch / path.name)
        inner = scratch / target.name  # CIFAR-10's archive holds the folder itself
        root = inner if inner.is_dir() and len(list(scratch.iterdir())) == 1 else scratch
        for name, md5 in item.members.items():
            if not (root / name).is_file():
                raise ChecksumError(f"{item.name}: the archive has no {name}; nothing was installed")
            problem = RemoteFile("", name, md5=md5).problem(root / name)
            if problem:
                raise ChecksumError(f"{item.name}: {name} in the archive: {problem}; nothing was installed")
        if item.marker:
            record = {"source": item.files[0].url,
                      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "md5": {f.filename: f.md5 for f in item.files}, "checked_by": "vgg-course fetch (every file before unpacking)"}  # fmt: skip
            (root / item.marker).write_text(json.dumps(record, indent=1) + "\n")
        old = None
        if target.exists():  # damaged or incomplete: moved aside, deleted after the swap
            old = target.with_name(f".{target.name}-old-{scratch.name[-8:]}")
            target.rename(old)
        root.chmod(0o755)  # mkdtemp made it private; the data folder is not
        root.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not keep_archives:
        for path in downloaded:
            path.unlink(missing_ok=True)


def fetch_item(item: Item, *, stall: float = 30.0, retries: int = 2, progress: bool = True,
               keep_archives: bool = False) -> Path:  # fmt: skip
    """Download, verify and install one item; returns its target. Files already downloaded and
    verified (an archive from an interrupted unpack) are not downloaded again."""
    downloaded = []
    for remote in item.files:
        dest = item.download_path(remote)
        if not (item.folder and dest.is_file() and remote.problem(dest) is None):
            download(remote, dest, stall=stall, retries=retries, progress=progress, desc=f"{item.name}: {remote.filename}")
        downloaded.append(dest)
    if item.folder:
        _install_folder(item, downloaded, keep_archives)
    return item.target


def _offline_message(items: Sequence[Item], hosts: set[str], timeout: float) -> str:
    names = " ".join(i.name for i in items)
    places = "\n".join(f"    {i.name}: {_shown(i.target)}" for i in items)
    return (
        f"cannot reach {', '.join(sorted(hosts))} (no answer within {timeout:g} s): this machine looks "
        f"offline, or needs its proxy set (https_proxy). Nothing was changed.\n"
        f"On a connected machine run\n    vgg-course fetch {names}\n"
        f"(or python -m vgg_utils fetch {names}) and copy the results to the same places here:\n{places}\n"
        "or serve the original files on the local network and run vgg-course fetch --mirror http://HOST:PORT/"
    )


def fetch(
    items: dict[str, Item],
    *,
    probe_timeout: float = 5.0,
    stall: float = 30.0,
    retries: int = 2,
    progress: bool = True,
    keep_archives: bool = False,
    out: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Fetch every item not already present and verified; returns ``{name: target}``.

    Prints the total size first, refuses when the disk is too small, probes the hosts (offline:
    :class:`FetchError` within about ``probe_timeout`` seconds, saying what to run on a connected
    machine), then downloads with progress bars. Damaged items are replaced. Raises
    :class:`FetchError` listing what failed, after fetching everything it could.
    """
    todo, done = [], {}
    for item in items.values():
        st = status(item)
        if st.state == "present":
            out(f"{item.name}: already present, checksum verified ({_shown(item.target)})")
            done[item.name] = item.target
        else:
            if st.state == "damaged":
                out(f"{item.name}: the copy in place is damaged ({st.detail}): replacing it")
            todo.append(item)
    if not todo:
        return done
    resumable = sum(part_path(i.download_path(f)).stat().st_size for i in todo for f in i.files
                    if part_path(i.download_path(f)).is_file())  # fmt: skip
    total = sum(i.approx_bytes for i in todo)
    sizes = ", ".join(f"{i.name} {i.approx_bytes / MB:,.0f} MB" for i in todo)
    out(f"to download: {sizes}; {total / MB:,.0f} MB in all"
        + (f" ({resumable / MB:,.0f} MB of it already downloaded, resumed)" if resumable else ""))  # fmt: skip
    for where in {i.target.parent for i in todo}:
        where.mkdir(parents=True, exist_ok=True)
        need = sum(i.approx_bytes + i.approx_installed for i in todo if i.target.parent == where)
        free = shutil.disk_usage(where).free
        if free < need - resumable:
            raise FetchError(f"{_shown(where)} has {free / MB:,.0f} MB free, but about {need / MB:,.0f} MB are "
                             "needed while downloading and unpacking: free some space (or set VGG_DATA_DIR / "
                             "TORCH_HOME to a bigger disk) and run again")  # fmt: skip
    offline = _unreachable_hosts(todo, probe_timeout)
    reachable = [i for i in todo if not any(urlparse(f.url).netloc in offline for f in i.files)]
    if not reachable:
        raise FetchError(_offline_message(todo, offline, probe_timeout))
    failed = [f"{i.name}: {urlparse(i.files[0].url).netloc} unreachable" for i in todo if i not in reachable]
    for item in reachable:
        try:
            done[item.name] = fetch_item(item, stall=stall, retries=retries, progress=progress, keep_archives=keep_archives)
            out(f"{item.name}: done, checksum verified ({_shown(item.target)})")
        except DownloadError as err:  # ChecksumError included: nothing half-written was kept
            failed.append(f"{item.name}: {err}")
    if failed:
        raise FetchError("not fetched:\n  " + "\n  ".join(failed))
    return done
