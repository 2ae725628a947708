"""Offline behaviour tested for real, on the loopback interface only (127.0.0.1, never another
address): servers that hang in the ways bad wifi, captive portals and stalled proxies do. Each
download must end with the clear offline error within its stated seconds."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torchvision

import vgg_utils
from vgg_utils import data as data_module
from vgg_utils import models as models_module

LOOPBACK = "127.0.0.1"


@contextmanager
def _serving(handle) -> Iterator[int]:
    """A loopback server whose accept loop hands each connection to ``handle`` and keeps it open
    until the test ends; yields the port."""
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except OSError:
                continue
            held.append(conn)
            handle(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def silent_server():
    """Accepts every connection and never sends a byte (a captive portal, a stalled proxy):
    a TCP-only probe would call this host reachable and the download would then hang."""
    return _serving(lambda conn: None)


@contextmanager
def unaccepting_server() -> Iterator[int]:
    """Listens but never accepts, with its queue already full: Linux then drops new SYNs, so a
    connect hangs (a refused port would fail at once and test nothing)."""
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect((LOOPBACK, port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.1)
    try:
        probe = socket.create_connection((LOOPBACK, port), timeout=0.5)
        probe.close()
        pytest.skip("this kernel accepts past a full listen queue; the never-accepting case cannot be made here")
    except TimeoutError:
        pass
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def _answer_then_stall(conn: socket.socket) -> None:
    conn.settimeout(2)
    try:
        request = conn.recv(4096)
    except OSError:
        return
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nContent-Type: application/octet-stream\r\n"
    if request.startswith(b"HEAD"):
        conn.sendall(head + b"Connection: close\r\n\r\n")
        conn.close()
    else:
        conn.sendall(head + b"\r\n" + b"\0" * 1000)  # then nothing more


def stalling_server():
    """Answers the reachability probe (HEAD) at once, then sends the headers and a first chunk
    of a download and stops: the download itself must give up, not hang."""
    return _serving(_answer_then_stall)


SERVERS = {"accepts, never answers": silent_server, "never accepts": unaccepting_server}


def within(seconds: float, load, *args, **kwargs) -> Exception:
    """Run ``load`` in a thread and return the exception it raised, failing the test if it has
    not returned after ``seconds`` (so a hang fails in seconds, not after the download's own
    timeout of minutes)."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(load(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - handed back to the test
            outcome.append(err)

    start = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{load.__name__} still waiting after {seconds} s"
    assert outcome and isinstance(outcome[0], Exception), f"{load.__name__} returned {outcome}"
    assert time.monotonic() - start < seconds
    return outcome[0]


@pytest.fixture
def no_cifar(monkeypatch, tmp_path):
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VGG_CIFAR10_DIR", raising=False)


@pytest.fixture
def empty_hub(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield
    torch.hub.set_dir(old)


def _vgg16_weights():
    return torchvision.models.VGG16_Weights.IMAGENET1K_V1.value


@pytest.mark.parametrize("server", SERVERS.values(), ids=SERVERS.keys())
def test_cifar10_gives_the_offline_error_within_its_timeout(server, monkeypatch, no_cifar):
    with server() as port:
        monkeypatch.setattr(data_module, "CIFAR10_URL", f"http://{LOOPBACK}:{port}/cifar-10-python.tar.gz")
        err = within(2.0 + 1.0, vgg_utils.load_cifar10, "test", timeout=2.0)
        assert isinstance(err, vgg_utils.DatasetUnavailableError)
        assert re.search(rf"{LOOPBACK} unreachable within 2 s.*connected machine", str(err))


@pytest.mark.parametrize("server", SERVERS.values(), ids=SERVERS.keys())
def test_pretrained_gives_the_offline_error_within_its_timeout(server, monkeypatch, empty_hub):
    weights = _vgg16_weights()
    with server() as port:
        monkeypatch.setattr(weights, "url", f"http://{LOOPBACK}:{port}/models/vgg16-397923af.pth")
        err = within(2.0 + 1.0, vgg_utils.load_pretrained, "D", timeout=2.0, progress=False)
        assert isinstance(err, vgg_utils.PretrainedUnavailableError)
        assert re.search(r"(?s)unreachable \(no answer within 2 s\).*vgg_utils.download vgg16", str(err))


def test_a_download_that_stalls_gives_up_with_the_offline_error(monkeypatch, no_cifar, empty_hub):
    with stalling_server() as port:
        assert models_module._reachable(f"http://{LOOPBACK}:{port}/x", 2.0)  # it does answer
        monkeypatch.setattr(data_module, "DOWNLOAD_STALL_SECONDS", 1.0)
        monkeypatch.setattr(models_module, "DOWNLOAD_STALL_SECONDS", 1.0)
        monkeypatch.setattr(data_module, "CIFAR10_URL", f"http://{LOOPBACK}:{port}/cifar-10-python.tar.gz")
        err = within(1.0 + 4.0, vgg_utils.load_cifar10, "test", timeout=2.0)
        assert isinstance(err, vgg_utils.DatasetUnavailableError)
        assert re.search("download from 127.0.0.1 failed.*timed out", str(err))
        monkeypatch.setattr(_vgg16_weights(), "url", f"http://{LOOPBACK}:{port}/models/vgg16-397923af.pth")
        err = within(1.0 + 4.0, vgg_utils.load_pretrained, "D", timeout=2.0, progress=False)
        assert isinstance(err, vgg_utils.PretrainedUnavailableError)
        assert re.search("download from 127.0.0.1 failed.*timed out", str(err))
    assert socket.getdefaulttimeout() is None  # the stall timeout was only for the download


def test_a_refused_port_fails_at_once():
    port_holder = socket.socket()
    port_holder.bind((LOOPBACK, 0))  # bound, not listening: the kernel refuses connections
    try:
        start = time.monotonic()
        assert models_module._reachable(f"http://{LOOPBACK}:{port_holder.getsockname()[1]}/", 2.0) is False
        assert time.monotonic() - start < 1.0
    finally:
        port_holder.close()
