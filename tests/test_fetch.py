"""``vgg-course fetch`` against real HTTP on the loopback interface only (127.0.0.1): servers the
tests start, serving small files the tests make. Good files land atomically where the loaders
look; wrong checksums are refused with nothing left behind; a connection dropped mid-body is
resumed (HTTP Range) or restarted; a damaged copy in place is replaced; a server that never
answers, or no server at all, fails within seconds with a message and an exit code."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from test_timeouts import silent_server  # a loopback server that accepts and never answers

from vgg_utils.cli import main
from vgg_utils.data import _cifar10_cached
from vgg_utils.downloader import DownloadError, RemoteFile, download, part_path
from vgg_utils.fetch import FetchError, Item, catalog, fetch, status
from vgg_utils.models import weights_path
from vgg_utils.runtime import cache_dir
from vgg_utils.transfer_data import flowers102_cached

LOOPBACK = "127.0.0.1"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all zeros: an offset error changes the digest


class Server:
    """A loopback HTTP server for ``files`` (path -> bytes). ``ranges``: honour ``Range``;
    ``drop``: the first ``drop`` GETs send the headers and half the body, then close."""

    def __init__(self, files: dict[str, bytes], *, ranges: bool = True, drop: int = 0) -> None:
        self.files, self.ranges, self.drop = files, ranges, drop
        self.requests: list[tuple[str, str | None]] = []  # (method path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                server.requests.append((f"{self.command} {self.path}", self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and server.ranges and not head:
                    start = int(re.match(r"bytes=(\d+)-", wanted).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head:
                    return
                if server.drop > 0:
                    server.drop -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the wifi went away mid-body
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}"

    def __enter__(self) -> Server:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self) -> list[str | None]:
        """The Range header of every GET, in order."""
        return [rng for what, rng in self.requests if what.startswith("GET")]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port that is bound but not listening: the kernel refuses connections at once."""
    holder = socket.socket()
    holder.bind((LOOPBACK, 0))
    yield holder.getsockname()[1]
    holder.close()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A fresh machine: an empty data folder and an empty torch.hub cache."""
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VGG_CIFAR10_DIR", raising=False)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(old)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_item(server: Server, target: Path, data: bytes = PAYLOAD, *, name: str = "demo") -> Item:
    """A single-file item like the weights: published name with a SHA-256 prefix."""
    filename = f"{name}-{sha256_hex(data)[:8]}.pth"
    server.files[f"/{filename}"] = data
    remote = RemoteFile(f"{server.url}/{filename}", filename, sha256_prefix=sha256_hex(data)[:8], approx_bytes=len(data))
    return Item(name, "a test file", (remote,), target / filename)


def quiet(**kwargs):
    return dict(progress=False, out=lambda line: None, **kwargs)


# --- where files land ----------------------------------------------------------------------------


def test_items_target_exactly_where_the_loaders_look(fresh):
    items = catalog(["cifar10", "vgg16", "flowers102"])
    assert items["vgg16"].target == weights_path("D")  # load_pretrained reads this file
    assert items["vgg16"].target.parent == Path(torch.hub.get_dir()) / "checkpoints"
    assert items["cifar10"].target == cache_dir() / "cifar-10-batches-py"  # load_cifar10's cache
    assert items["flowers102"].target == cache_dir() / "flowers-102"  # download_flowers102's folder
    assert items["vgg16"].files[0].sha256_prefix == "397923af"  # from torchvision's file name
    assert items["cifar10"].files[0].md5 == "c58f30108f718f92721af3b95e74349a"  # torchvision's MD5
    assert {status(i).state for i in items.values()} == {"missing"}


def test_a_mirror_changes_where_from_not_what_is_accepted(fresh):
    item = catalog(["vgg16"], mirror="http://127.0.0.1:8000/course/")["vgg16"]
    assert item.files[0].url == "http://127.0.0.1:8000/course/vgg16-397923af.pth"
    assert item.files[0].sha256_prefix == "397923af"
    with pytest.raises(ValueError, match="valid names: cifar10, vgg16, flowers102"):
        catalog(["cifar100"])


def test_a_good_file_is_verified_and_moved_into_place(tmp_path):
    with Server({}) as server:
        item = file_item(server, tmp_path / "hub" / "checkpoints")
        done = fetch({"demo": item}, **quiet())
    assert done["demo"].read_bytes() == PAYLOAD
    assert not part_path(item.target).exists()
    assert status(item).state == "present"


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(tmp_path):
    with Server({}) as server:
        item = file_item(server, tmp_path)
        server.files[f"/{item.files[0].filename}"] = b"<html>captive portal: please log in</html>"
        with pytest.raises(FetchError, match="not the published file"):
            fetch({"demo": item}, **quiet())
    assert not item.target.exists()
    assert not part_path(item.target).exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed with Range", "restarted without Range"])
def test_a_connection_dropped_mid_body_is_resumed_or_restarted(tmp_path, ranges):
    with Server({}, ranges=ranges, drop=1) as server:
        item = file_item(server, tmp_path)
        fetch({"demo": item}, **quiet(retries=1))
    assert item.target.read_bytes() == PAYLOAD
    assert server.gets() == [None, f"bytes={len(PAYLOAD) // 2}-"]  # the retry asked for the rest
    assert not part_path(item.target).exists()


def test_an_interrupted_download_is_kept_and_resumed_by_the_next_run(tmp_path):
    with Server({}, drop=1) as server:
        item = file_item(server, tmp_path)
        with pytest.raises(FetchError, match="run the same command again to resume"):
            fetch({"demo": item}, **quiet(retries=0))
        assert not item.target.exists()  # never a half file where the loader looks
        assert part_path(item.target).stat().st_size == len(PAYLOAD) // 2
        assert status(item).state == "partial"
        fetch({"demo": item}, **quiet(retries=0))
    assert item.target.read_bytes() == PAYLOAD
    assert server.gets()[-1] == f"bytes={len(PAYLOAD) // 2}-"


def test_a_stale_part_file_of_another_file_is_discarded(tmp_path):
    with Server({}) as server:
        item = file_item(server, tmp_path)
        part_path(item.target).write_bytes(b"x" * 1000)  # left by some other download
        fetch({"demo": item}, **quiet())
    assert item.target.read_bytes() == PAYLOAD


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_file_in_place_is_detected_and_replaced(tmp_path, damage):
    with Server({}) as server:
        item = file_item(server, tmp_path)
        bad = PAYLOAD[: len(PAYLOAD) // 3] if damage == "truncated" else b"\xff" + PAYLOAD[1:]
        item.target.write_bytes(bad)
        assert status(item).state == "damaged"
        lines: list[str] = []
        fetch({"demo": item}, progress=False, out=lines.append)
    assert item.target.read_bytes() == PAYLOAD
    assert any("damaged" in line and "replacing it" in line for line in lines)


def test_a_present_file_is_not_downloaded_again(tmp_path):
    with Server({}) as server:
        item = file_item(server, tmp_path)
        item.target.write_bytes(PAYLOAD)
        lines: list[str] = []
        fetch({"demo": item}, progress=False, out=lines.append)
        assert server.requests == []
    assert "already present, checksum verified" in lines[0]


def test_a_server_that_never_answers_fails_within_the_probe_timeout(tmp_path):
    with silent_server() as port:
        remote = RemoteFile(f"http://{LOOPBACK}:{port}/demo-12345678.pth", "demo-12345678.pth", sha256_prefix="12345678")
        item = Item("demo", "a test file", (remote,), tmp_path / remote.filename)
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"(?s)cannot reach 127\.0\.0\.1.*within 2 s.*On a connected machine"):
            fetch({"demo": item}, **quiet(probe_timeout=2.0))
        assert time.monotonic() - start < 2.0 + 2.0
    assert list(tmp_path.iterdir()) == []  # nothing changed


def test_a_server_that_stalls_mid_body_is_given_up_with_the_part_kept(tmp_path):
    stall_after = threading.Event()

    def handler(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        stall_after.wait(10)  # then silence, connection open

    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(4)
    threading.Thread(target=lambda: handler(server.accept()[0]), daemon=True).start()
    remote = RemoteFile(f"http://{LOOPBACK}:{server.getsockname()[1]}/f-12345678.bin", "f-12345678.bin", sha256_prefix="12345678")
    start = time.monotonic()
    try:
        with pytest.raises(DownloadError, match="kept in"):
            download(remote, tmp_path / remote.filename, stall=1.0, retries=0, progress=False)
        assert time.monotonic() - start < 1.0 + 3.0
    finally:
        stall_after.set()
        server.close()
    assert part_path(tmp_path / remote.filename).stat().st_size == 1000


def test_no_server_fails_at_once_with_the_exit_code_and_what_to_run(fresh, refused_port, capsys):
    start = time.monotonic()
    code = main(["fetch", "vgg16", "cifar10", "--quiet", "--mirror", f"http://{LOOPBACK}:{refused_port}/"])
    assert time.monotonic() - start < 10.0  # a refused port answers at once; the rest is hashing nothing
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(r"(?s)cannot reach 127\.0\.0\.1.*Nothing was changed.*On a connected machine run\s+vgg-course fetch vgg16 cifar10", err)
    assert "vgg16-397923af.pth" in err and "cifar-10-batches-py" in err  # where to copy the files
    assert not weights_path("D").exists() and not (cache_dir() / "cifar-10-batches-py").exists()


def test_fetch_alone_lists_sizes_places_and_state(fresh, capsys):
    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    for name, mb in (("cifar10", "170 MB"), ("vgg16", "553 MB"), ("flowers102", "345 MB")):
        assert re.search(rf"{name}\s+{mb}\s+\S+\s+missing", out), out
    assert main(["fetch", "imagenet"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_a_checksum_mismatch_through_the_command_line_exits_non_zero(fresh, capsys):
    with Server({"/vgg16-397923af.pth": b"not the weights"}) as server:
        assert main(["fetch", "vgg16", "--quiet", "--mirror", server.url]) == 1
    assert "not the published file" in capsys.readouterr().err
    assert not weights_path("D").exists() and not part_path(weights_path("D")).exists()


# --- folders: CIFAR-10 and Oxford Flowers in their loaders' layouts ------------------------------


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _small_cifar(server: Server, *, corrupt_member: bool = False) -> Item:
    """The real cifar10 item with a small archive of the same layout and its own checksums."""
    real = catalog(["cifar10"])["cifar10"]
    members = {name: f"{name} contents".encode() for name in real.members}
    archive = {f"cifar-10-batches-py/{n}": (b"flipped" if corrupt_member and n == "test_batch" else d) for n, d in members.items()}
    data = _tar_gz(archive)
    server.files["/cifar-10-python.tar.gz"] = data
    remote = dataclasses.replace(real.files[0], url=f"{server.url}/cifar-10-python.tar.gz", md5=_md5(data))
    return dataclasses.replace(real, files=(remote,), members={n: _md5(d) for n, d in members.items()})


def test_cifar10_is_unpacked_into_torchvisions_cache_layout(fresh):
    with Server({}) as server:
        item = _small_cifar(server)
        fetch({"cifar10": item}, **quiet())
    assert _cifar10_cached(cache_dir())  # what load_cifar10 checks before torchvision reads it
    assert status(item).state == "present"
    assert sorted(p.name for p in cache_dir().iterdir()) == ["cifar-10-batches-py"]  # no archive, no scratch


def test_an_archive_with_a_bad_member_installs_nothing(fresh):
    with Server({}) as server:
        item = _small_cifar(server, corrupt_member=True)
        with pytest.raises(FetchError, match="test_batch in the archive"):
            fetch({"cifar10": item}, **quiet())
    assert not item.target.exists()
    assert not any(p.name.startswith(".cifar-10-batches-py-partial") for p in cache_dir().iterdir())


def test_a_damaged_cifar10_folder_is_replaced(fresh):
    with Server({}) as server:
        item = _small_cifar(server)
        fetch({"cifar10": item}, **quiet(keep_archives=True))
        (item.target / "data_batch_3").write_bytes(b"bit rot")
        assert status(item).state == "damaged"
        assert server.gets() == [None]
        fetch({"cifar10": item}, **quiet())
        assert server.gets() == [None]  # the kept, verified archive was unpacked again
    assert status(item).state == "present"


def test_flowers102_lands_where_download_flowers102_looks(fresh):
    real = catalog(["flowers102"])["flowers102"]
    contents = {"102flowers.tgz": _tar_gz({"jpg/image_00001.jpg": b"\xff\xd8jpeg"}),
                "imagelabels.mat": b"labels", "setid.mat": b"setid"}  # fmt: skip
    with Server({f"/{n}": d for n, d in contents.items()}) as server:
        files = tuple(dataclasses.replace(f, url=f"{server.url}/{f.filename}", md5=_md5(contents[f.filename])) for f in real.files)
        item = dataclasses.replace(real, files=files, members={n: _md5(contents[n]) for n in real.members})
        fetch({"flowers102": item}, **quiet())
    assert flowers102_cached()  # the marker download_flowers102 trusts
    assert (item.target / "jpg" / "image_00001.jpg").is_file()
    assert (item.target / "setid.mat").read_bytes() == b"setid"
    assert not (cache_dir() / "102flowers.tgz").exists()


def test_the_download_alias_still_works(fresh, refused_port, capsys):
    from vgg_utils.download import main as download_main

    assert download_main(["vgg16", "--quiet", "--mirror", f"http://{LOOPBACK}:{refused_port}/"]) == 1
    assert "On a connected machine" in capsys.readouterr().err


def test_remote_files_must_be_checkable():
    with pytest.raises(ValueError, match="md5 or sha256_prefix"):
        RemoteFile("http://127.0.0.1/x", "x")
