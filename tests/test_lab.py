"""`make lab`'s JupyterLab, started headless: it serves the notebooks and its kernels import vgg_utils."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from vgg_utils import REPO_ROOT

START_TIMEOUT = 90  # seconds for the server to answer
KERNEL_TIMEOUT = 90  # seconds for a kernel to run one cell


#: What `make lab` passes so that learners get no news pop-up and no update check (Makefile LAB_QUIET).
QUIET = {
    "LabApp.news_url": "None",
    "LabApp.check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
    "LabApp.app_settings_dir": str(REPO_ROOT / "lab-settings"),
}
NOTIFICATION = "@jupyterlab/apputils-extension:notification"  # the plugin whose settings ask


def lab_quiet_flags() -> list[str]:
    """The Makefile's LAB_QUIET flags, as the shell would pass them."""
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^LAB_QUIET :=(.*)$", text, re.M)
    assert match, "the Makefile defines LAB_QUIET"
    recipe = re.search(r"^lab:.*\n\t(.*)$", text, re.M)
    assert recipe and "$(LAB_QUIET)" in recipe.group(1), "the lab target passes $(LAB_QUIET)"
    return shlex.split(match.group(1).replace("$(CURDIR)", str(REPO_ROOT)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_command(port: int, token: str) -> list[str]:
    args = (
        f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
        f"--IdentityProvider.token={token} --ServerApp.disable_check_xsrf=True"
    )
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        args += " --allow-root"
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    # Inside the Makefile's environment, test the real `make lab`; elsewhere (conda, pip-only
    # Windows users) start JupyterLab the way the Makefile does, with this interpreter.
    if shutil.which("make") and venv_python.exists() and Path(sys.prefix) == venv_python.parent.parent:
        return ["make", "-s", "--no-print-directory", "lab", f"LAB_ARGS={args}"]
    return [sys.executable, "-m", "jupyterlab", "--notebook-dir=notebooks", *lab_quiet_flags(), *args.split()]


def _get(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict | list:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"token {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else {}


async def _execute(ws_url: str, code: str) -> str:
    """Run one cell over the kernel's websocket (Jupyter messaging protocol v5); return its stdout."""
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(ws_url)
    msg_id = uuid.uuid4().hex
    session = uuid.uuid4().hex
    message = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                   "username": "test", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }
    await conn.write_message(json.dumps(message))
    out, status = [], None
    while status is None:
        raw = await conn.read_message()
        if raw is None:
            raise RuntimeError("kernel websocket closed")
        if isinstance(raw, bytes):
            continue
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = reply["header"]["msg_type"]
        if kind == "stream":
            out.append(reply["content"]["text"])
        elif kind == "error":
            out.append("\n".join(reply["content"]["traceback"]))
        elif kind == "execute_reply":
            status = reply["content"]["status"]
    conn.close()
    return "".join(out) + f"\n[status: {status}]"


@pytest.fixture
def lab_server():
    port, token = _free_port(), secrets.token_hex(16)
    log = open(REPO_ROOT / ".pytest_lab.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        _lab_command(port, token), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: make, jupyter and kernels die together
        env={**os.environ, "JUPYTER_NO_CONFIG": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start: {(REPO_ROOT / '.pytest_lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        (REPO_ROOT / ".pytest_lab.log").unlink(missing_ok=True)


@pytest.mark.skipif(sys.platform == "win32", reason="process-group clean-up uses POSIX signals")
def test_lab_serves_the_notebooks_and_a_kernel_imports_vgg_utils(lab_server):
    base, token = lab_server
    lab_page = urllib.request.urlopen(
        urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}), timeout=10
    )
    assert lab_page.status == 200
    listing = _get(f"{base}/api/contents", token)
    served = {item["name"] for item in listing["content"]}
    expected = {p.name for p in (REPO_ROOT / "notebooks").glob("*.ipynb")}
    assert expected and expected <= served, f"served {served}, expected {expected}"

    # No news pop-up: the frontend asks "Would you like to get notified about official Jupyter
    # news?" while fetchNews is "none"; the server fetches no news and checks no version.
    # (lab-settings/overrides.json changes the defaults the server sends with the schema.)
    defaults = {k: v.get("default") for k, v in _get(f"{base}/lab/api/settings/{NOTIFICATION}", token)["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults
    assert _get(f"{base}/lab/api/news", token)["news"] == []
    assert _get(f"{base}/lab/api/update", token)["notification"] is None

    kernel = _get(f"{base}/api/kernels", token, method="POST", body={"name": "python3"})
    try:
        ws_url = f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{kernel['id']}/channels?token={token}"
        code = "import vgg_utils, sys; print('OK', vgg_utils.count_params(vgg_utils.build_vgg('A', width=0.125)), sys.prefix)"
        output = asyncio.run(asyncio.wait_for(_execute(ws_url, code), KERNEL_TIMEOUT))
        assert "[status: ok]" in output, output
        assert "OK " in output, output
    finally:
        _get(f"{base}/api/kernels/{kernel['id']}", token, method="DELETE")


def test_make_lab_turns_off_the_news_pop_up_and_update_checks_with_real_trait_names() -> None:
    """The flags exist in the installed JupyterLab (a rename fails here) and mean what they say."""
    from jupyterlab.commands import get_app_dir
    from jupyterlab.handlers.announcements import NeverCheckForUpdate
    from jupyterlab.labapp import LabApp

    flags = lab_quiet_flags()
    assert flags == [f"--{name}={value}" for name, value in QUIET.items()], flags
    traits = LabApp.class_traits(config=True)
    for name in QUIET:
        assert name.split(".")[1] in traits, f"JupyterLab {LabApp.version} has no configurable {name}"
    app = LabApp()
    app.parse_command_line(flags)  # what `make lab` passes, read as JupyterLab reads it
    assert app.news_url is None
    assert app.check_for_updates_class is NeverCheckForUpdate
    assert app.app_settings_dir == QUIET["LabApp.app_settings_dir"]

    # overrides.json sets settings that the installed schema has, to values it allows.
    overrides = json.loads((REPO_ROOT / "lab-settings" / "overrides.json").read_text(encoding="utf-8"))
    plugin, name = NOTIFICATION.split(":")
    schema = json.loads((Path(get_app_dir()) / "schemas" / plugin / f"{name}.json").read_text(encoding="utf-8"))
    assert set(overrides) == {NOTIFICATION}
    assert overrides[NOTIFICATION] == {"fetchNews": "false", "checkForUpdates": False}
    properties = schema["properties"]
    news = properties["fetchNews"]  # JupyterLab 4.0 lists the choices as an enum, later ones as oneOf
    assert "false" in ([choice["const"] for choice in news.get("oneOf", [])] or news.get("enum", []))
    assert properties["fetchNews"]["default"] == "none"  # the default that shows the pop-up
    assert properties["checkForUpdates"]["type"] == "boolean"


def test_readme_starts_jupyterlab_the_way_the_makefile_does() -> None:
    """Learners without make (Windows, conda) copy the README's command: it must be just as quiet."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    starts = [line for line in readme.splitlines() if re.search(r"(-m jupyterlab|jupyter lab) ", line)]
    assert len(starts) >= 2, starts
    for line in starts:
        for name in QUIET:
            assert f"--{name}=" in line, f"README: {line.strip()!r} lacks --{name}"
