"""``vgg-course`` / ``python -m vgg_utils``: the commands from a fresh state, offline, and
``doctor``'s verdict: exit 0 when the course runs (saying which fallbacks), 1 when it cannot
(a package below its bound, a damaged course model, no notebooks, no disk)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_fetch

from vgg_utils.cli import main
from vgg_utils.doctor import (
    Check,
    check_course_models,
    check_downloads,
    check_network,
    lower_bounds,
    report,
    run_checks,
)
from vgg_utils.runtime import REPO_ROOT

fresh = test_fetch.fresh  # fixtures shared with the fetch tests: nothing downloaded; a refused port
refused_port = test_fetch.refused_port


@pytest.fixture
def refused_url(refused_port):
    return f"http://127.0.0.1:{refused_port}/"


def levels(checks: list[Check]) -> dict[str, str]:
    return {c.topic: c.level for c in checks}


def test_doctor_on_a_fresh_offline_machine_runs_on_fallbacks(fresh, refused_url):
    checks = run_checks(network_urls=[refused_url], network_timeout=1.0)
    text, code = report(checks)
    assert code == 0, text
    found = levels(checks)
    assert found["Python"] == found["torch"] == found["torchvision"] == found["notebooks"] == "ok"
    assert found["course model shapes96"] == found["course model cifar10"] == "ok"
    assert found["cifar10"] == found["vgg16"] == found["flowers102"] == found["network"] == "fallback"
    assert "built-in shapes" in text and "course's own models" in text and "unreachable within 1 s" in text
    assert "on a connected machine: vgg-course fetch cifar10" in text
    assert re.search(r"the course runs, with fallbacks for: cifar10, vgg16, flowers102, network", text)
    assert re.search(r"device: (CPU|CUDA|Apple MPS)", text) and "bf16:" in text and "disk:" in text


def test_a_local_cifar10_copy_counts_as_present(fresh, monkeypatch):
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(fresh))
    assert levels(check_downloads())["cifar10"] == "ok"


def test_a_damaged_course_model_makes_doctor_fail(fresh, capsys):
    copy = fresh / "data" / "checkpoints"
    shutil.copytree(REPO_ROOT / "data" / "checkpoints", copy)  # VGG_DATA_DIR/checkpoints wins when it has the record
    weights = copy / "shapes96.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(data))
    found = {c.topic: c for c in check_course_models()}
    assert found["course model shapes96"].level == "problem"
    assert "does not match its record" in found["course model shapes96"].detail
    assert "python -m vgg_utils.course_models build shapes96" in found["course model shapes96"].fix
    assert found["course model cifar10"].level == "ok"
    assert main(["doctor", "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] course model shapes96" in out and "the course cannot run as it is" in out


@pytest.mark.parametrize(
    "case, kwargs, topic",
    [
        ("torch below its bound", {"bounds": {"torch": "99.0", "numpy": "1.0"}}, "torch"),
        ("a dependency missing", {"bounds": {"no-such-package-vgg": "1.0"}}, "no-such-package-vgg"),
        ("no notebooks", {"notebooks": "EMPTY"}, "notebooks"),
        ("too little disk", {"min_free_mb": 1e15}, "disk"),
    ],
)
def test_doctor_fails_when_the_course_cannot_run(fresh, refused_url, case, kwargs, topic):
    if kwargs.get("notebooks") == "EMPTY":
        kwargs = {"notebooks": fresh}
    checks = run_checks(network_urls=[refused_url], network_timeout=1.0, **kwargs)
    text, code = report(checks)
    assert code == 1, case
    problem = next(c for c in checks if c.topic == topic and c.level == "problem")
    assert problem.fix, f"{case}: a problem must say what to do"
    assert "the course cannot run as it is" in text


def test_a_truncated_notebook_is_a_problem(fresh):
    folder = fresh / "notebooks"
    folder.mkdir()
    (folder / "01_architecture.ipynb").write_text('{"cells": [')
    checks = run_checks(notebooks=folder, network_urls=[], network_timeout=1.0)
    assert levels(checks)["notebooks"] == "problem"


def test_lower_bounds_come_from_pyproject():
    bounds = lower_bounds()
    text = (REPO_ROOT / "pyproject.toml").read_text()
    for name in ("torch", "torchvision", "numpy"):
        assert f'"{name}>={bounds[name]}"' in text
    assert "pytest" not in bounds  # a dev extra is not needed to run the course


def test_network_check_says_reachable_when_a_server_answers():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        [check] = check_network([f"http://127.0.0.1:{httpd.server_address[1]}/x"], timeout=2.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert check.level == "ok" and "reachable" in check.detail


def _console(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VGG_CIFAR10_DIR"}
    env.update(VGG_DATA_DIR=str(tmp_path / "data"), TORCH_HOME=str(tmp_path / "torch"))
    return env


def test_the_console_script_and_python_m_work_from_a_fresh_state(tmp_path, refused_url):
    script = Path(sys.executable).with_name("vgg-course")
    if not script.is_file():
        pytest.skip(f"no console script beside {sys.executable}: install the package (make setup)")
    listed = subprocess.run([sys.executable, "-m", "vgg_utils", "fetch"], capture_output=True, text=True,
                            env=_console(tmp_path), timeout=300)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"cifar10 .* missing", listed.stdout) and "vgg16" in listed.stdout
    offline = subprocess.run([str(script), "fetch", "--all", "--quiet", "--mirror", refused_url],
                             capture_output=True, text=True, env=_console(tmp_path), timeout=300)  # fmt: skip
    assert offline.returncode == 1
    assert "On a connected machine run\n    vgg-course fetch cifar10 vgg16 flowers102" in offline.stderr
    assert not (tmp_path / "data" / "cache" / "cifar-10-batches-py").exists()


def test_wrong_usage_exits_2_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2 and "doctor,fetch,run" in capsys.readouterr().err
    assert main(["fetch", "--all", "vgg16"]) == 2
