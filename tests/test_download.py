"""data/download.py against a local HTTP server (127.0.0.1, a free port, in a thread).

The server's handler supports Range requests, and can be told to ignore Range
or to drop the connection half-way, to exercise resume, restart and the
atomic rename.
"""
from __future__ import annotations

import http.server
import importlib.util
import os
import random
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import pytest

from common.cli import REPO_ROOT, UserError

spec = importlib.util.spec_from_file_location("data_download", REPO_ROOT / "data" / "download.py")
download_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(download_script)
download = download_script.download

NAMES = ["ratings_train.txt", "ratings_test.txt", "kowiki-latest-pages-articles.xml.bz2"]


@dataclass
class ServerState:
    files: dict[str, bytes]
    honor_range: bool = True
    drop_after: int | None = None  # bytes of body to send before closing the connection
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    body_bytes_sent: int = 0


class RangeHandler(http.server.BaseHTTPRequestHandler):
    state: ServerState  # set on a subclass per server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        state = self.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        content = state.files.get(self.path.lstrip("/"))
        if content is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if range_header and state.honor_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(content):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(content)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            self.send_response(200)
        body = content[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.drop_after is not None:
            body = body[: state.drop_after]
            self.close_connection = True
        self.wfile.write(body)
        state.body_bytes_sent += len(body)


@pytest.fixture
def server():
    """Yield (base URL, state) of a fresh local server."""
    rng = random.Random(1)
    state = ServerState(files={name: rng.randbytes(size) for name, size in zip(NAMES, [2_500_000, 700_000, 300_000])})
    handler = type("Handler", (RangeHandler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_full_download(server, tmp_path):
    base, state = server
    target = tmp_path / "ratings_train.txt"
    assert download(f"{base}/ratings_train.txt", target, timeout=10) == "downloaded"
    assert target.read_bytes() == state.files["ratings_train.txt"]
    assert os.listdir(tmp_path) == ["ratings_train.txt"]  # no .part left
    assert state.requests == [("/ratings_train.txt", None)]


def test_resume_a_partial_part_file(server, tmp_path):
    base, state = server
    content = state.files["ratings_train.txt"]
    target = tmp_path / "ratings_train.txt"
    (tmp_path / "ratings_train.txt.part").write_bytes(content[:1_000_000])
    assert download(f"{base}/ratings_train.txt", target, timeout=10) == "resumed"
    assert target.read_bytes() == content
    assert state.requests == [("/ratings_train.txt", "bytes=1000000-")]
    assert state.body_bytes_sent == len(content) - 1_000_000
    assert not (tmp_path / "ratings_train.txt.part").exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    base, state = server
    state.honor_range = False
    target = tmp_path / "ratings_test.txt"
    # Wrong bytes in the .part: they must be overwritten, not kept.
    (tmp_path / "ratings_test.txt.part").write_bytes(b"x" * 5000)
    assert download(f"{base}/ratings_test.txt", target, timeout=10) == "downloaded"
    assert target.read_bytes() == state.files["ratings_test.txt"]
    assert state.requests == [("/ratings_test.txt", "bytes=5000-")]


def test_dropped_connection_keeps_part_then_resumes(server, tmp_path):
    base, state = server
    content = state.files["ratings_train.txt"]
    target = tmp_path / "ratings_train.txt"
    state.drop_after = 600_000
    with pytest.raises(UserError, match="stopped at 600,000 of 2,500,000 bytes.*run again"):
        download(f"{base}/ratings_train.txt", target, timeout=10)
    assert not target.exists()  # only a complete file gets the final name
    assert (tmp_path / "ratings_train.txt.part").stat().st_size == 600_000

    state.drop_after = None
    assert download(f"{base}/ratings_train.txt", target, timeout=10) == "resumed"
    assert target.read_bytes() == content
    assert state.requests[-1] == ("/ratings_train.txt", "bytes=600000-")


def test_complete_file_is_skipped(server, tmp_path):
    base, state = server
    target = tmp_path / "ratings_test.txt"
    target.write_bytes(b"already here")
    assert download(f"{base}/ratings_test.txt", target, timeout=10) == "skipped"
    assert target.read_bytes() == b"already here" and state.requests == []


def test_complete_part_is_renamed_and_oversized_part_restarts(server, tmp_path):
    base, state = server
    content = state.files["ratings_test.txt"]
    # a .part that holds the whole file (stopped before the rename): 416, then rename
    (tmp_path / "ratings_test.txt.part").write_bytes(content)
    assert download(f"{base}/ratings_test.txt", tmp_path / "ratings_test.txt", timeout=10) == "resumed"
    assert (tmp_path / "ratings_test.txt").read_bytes() == content
    # a .part longer than the file (it changed on the server): start over
    (tmp_path / "ratings_train.txt.part").write_bytes(b"y" * 3_000_000)
    assert download(f"{base}/ratings_train.txt", tmp_path / "ratings_train.txt", timeout=10) == "downloaded"
    assert (tmp_path / "ratings_train.txt").read_bytes() == state.files["ratings_train.txt"]


def test_http_and_network_errors_are_user_errors(server, tmp_path):
    base, _ = server
    with pytest.raises(UserError, match="HTTP 404"):
        download(f"{base}/missing.txt", tmp_path / "missing.txt", timeout=10)
    with pytest.raises(UserError, match="could not download http://127.0.0.1:.*refused"):
        download(f"{closed_port_url()}/ratings_train.txt", tmp_path / "ratings_train.txt", timeout=10)
    assert os.listdir(tmp_path) == []


def test_main_fetches_each_group(server, tmp_path):
    base, state = server
    download_script.main(["--only", "all", "--base-url", base + "/", "--dest", str(tmp_path / "new" / "dl")])
    for name in NAMES:
        assert (tmp_path / "new" / "dl" / name).read_bytes() == state.files[name]
    download_script.main(["--only", "nsmc", "--base-url", base, "--dest", str(tmp_path / "nsmc")])
    assert sorted(os.listdir(tmp_path / "nsmc")) == ["ratings_test.txt", "ratings_train.txt"]


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "data/download.py", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_script_downloads_then_skips(server, tmp_path):
    base, state = server
    first = run_script("--only", "nsmc", "--base-url", base, "--dest", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "ratings_train.txt").read_bytes() == state.files["ratings_train.txt"]
    second = run_script("--only", "nsmc", "--base-url", base, "--dest", str(tmp_path))
    assert second.returncode == 0 and second.stdout.count("already complete") == 2


def test_script_network_error_is_one_line(tmp_path):
    result = run_script("--only", "nsmc", "--base-url", closed_port_url(), "--dest", str(tmp_path), "--timeout", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download"), result.stderr
    assert os.listdir(tmp_path) == []
