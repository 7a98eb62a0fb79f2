"""fetch() over real HTTP on 127.0.0.1, file:// URLs and plain paths; the download stage end to end."""

import hashlib
import http.server
import socket
import threading
import time

import pytest

from conftest import assert_one_line_error, load_stage, run_script, tiny, write_params
from depthstudy import archive as cifar
from depthstudy.download import fetch
from depthstudy.errors import UserError


class Handler(http.server.BaseHTTPRequestHandler):
    """/archive.tar.gz: the payload; /half.tar.gz: its Content-Length, half the bytes, then a closed connection;
    /busy: HTTP 503; /stall: no answer for 1 s; anything else: 404."""

    def do_GET(self):
        self.server.requests.append(self.path)
        payload = self.server.payload
        if self.path == "/busy":
            self.send_error(503)
        elif self.path == "/stall":
            time.sleep(1)
        elif self.path in ("/archive.tar.gz", "/half.tar.gz"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload if self.path == "/archive.tar.gz" else payload[: len(payload) // 2])
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    return tiny().write(tmp_path_factory.mktemp("payload") / "a.tar.gz").read_bytes()


@pytest.fixture
def server(payload):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.payload, httpd.requests = payload, []
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


def left_in(directory) -> list[str]:
    """Every name left in ``directory`` (hidden .part files included); [] when it does not exist."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- HTTP --------------------------------------------------------------------------------------------------------


def test_http_download_is_verified_and_byte_identical(server, payload, tmp_path):
    dest = tmp_path / "data" / "a.tar.gz"
    fetch(server.url("/archive.tar.gz"), dest, md5(payload).upper(), backoff=0)
    assert dest.read_bytes() == payload
    assert left_in(dest.parent) == ["a.tar.gz"]
    assert server.requests == ["/archive.tar.gz"]


def test_wrong_md5_leaves_nothing_behind(server, payload, tmp_path):
    dest = tmp_path / "data" / "a.tar.gz"
    with pytest.raises(UserError) as e:
        fetch(server.url("/archive.tar.gz"), dest, "0" * 32, backoff=0)
    assert f"expected {'0' * 32}, got {md5(payload)}" in str(e.value)
    assert left_in(dest.parent) == []


def test_failed_download_keeps_the_previous_file(server, tmp_path):
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"the archive from last time")
    with pytest.raises(UserError, match="md5 mismatch"):
        fetch(server.url("/archive.tar.gz"), dest, "0" * 32, backoff=0)
    assert dest.read_bytes() == b"the archive from last time"
    assert left_in(tmp_path) == ["a.tar.gz"]


@pytest.mark.parametrize("path", ["/half.tar.gz", "/busy"])
def test_transient_failures_are_retried_then_reported(server, payload, tmp_path, path):
    dest = tmp_path / "data" / "a.tar.gz"
    with pytest.raises(UserError) as e:
        fetch(server.url(path), dest, md5(payload), retries=2, backoff=0)
    assert server.requests == [path] * 3
    assert f"download of {server.url(path)} failed after 3 tries" in str(e.value)
    assert left_in(dest.parent) == []


def test_read_timeout_is_retried(server, payload, tmp_path):
    start = time.monotonic()
    with pytest.raises(UserError, match="failed after 2 tries"):
        fetch(server.url("/stall"), tmp_path / "a.tar.gz", md5(payload), timeout=0.2, retries=1, backoff=0)
    assert time.monotonic() - start < 1.5
    assert server.requests == ["/stall"] * 2
    assert left_in(tmp_path) == []


def test_http_404_fails_at_once(server, payload, tmp_path):
    url = server.url("/nope.tar.gz")
    with pytest.raises(UserError) as e:
        fetch(url, tmp_path / "a.tar.gz", md5(payload), retries=3, backoff=0)
    assert server.requests == ["/nope.tar.gz"]
    assert url in str(e.value) and "HTTP 404" in str(e.value) and "file://" in str(e.value)
    assert left_in(tmp_path) == []


def test_unreachable_server_names_the_url_and_the_local_alternative(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/a.tar.gz"
    with pytest.raises(UserError) as e:
        fetch(url, tmp_path / "a.tar.gz", "0" * 32, retries=1, backoff=0)
    assert url in str(e.value) and "file://" in str(e.value) and "local path" in str(e.value)
    assert left_in(tmp_path) == []


# --- local files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["file-url", "path"])
def test_local_copy_by_file_url_or_path(payload, tmp_path, form):
    src = tmp_path / "my copies" / "cifar.tar.gz"  # a space, to check the file:// URL is unquoted
    src.parent.mkdir()
    src.write_bytes(payload)
    dest = tmp_path / "data" / "a.tar.gz"
    fetch(src.as_uri() if form == "file-url" else str(src), dest, md5(payload))
    assert dest.read_bytes() == payload
    assert left_in(dest.parent) == ["a.tar.gz"]


@pytest.mark.parametrize(
    "make_url, message",
    [
        (lambda d: (d / "missing.tar.gz").as_uri(), "missing.tar.gz does not exist"),
        (lambda d: str(d / "missing.tar.gz"), "missing.tar.gz does not exist"),
        (lambda d: d.as_uri(), "is not a file"),
        (lambda d: "ftp://example.org/a.tar.gz", "unsupported scheme 'ftp'"),
        (lambda d: "file://otherhost/a.tar.gz", "not host 'otherhost'"),
    ],
)
def test_bad_local_source_is_a_user_error(tmp_path, make_url, message):
    dest = tmp_path / "data" / "a.tar.gz"
    with pytest.raises(UserError, match=message):
        fetch(make_url(tmp_path), dest, "0" * 32)
    assert left_in(dest.parent) == []


# --- the download stage ------------------------------------------------------------------------------------------


def test_download_script_fetches_from_params_url(server, payload, tmp_path):
    write_params(tmp_path, {"data.url": server.url("/archive.tar.gz"), "data.md5": md5(payload)})
    result = run_script("download", tmp_path / "data" / "a.tar.gz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "a.tar.gz").read_bytes() == payload
    assert left_in(tmp_path / "data") == ["a.tar.gz"]


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("/nope.tar.gz", "HTTP 404"),
        ("/archive.tar.gz", "md5 mismatch"),
    ],
)
def test_download_script_failure_is_one_line_and_no_archive(server, tmp_path, path, fragment):
    write_params(tmp_path, {"data.url": server.url(path), "data.md5": "0" * 32})
    result = run_script("download", tmp_path / "data" / "a.tar.gz", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, server.url(path), fragment)
    assert left_in(tmp_path / "data") == []


def test_download_stage_builds_digits_offline(tmp_path, monkeypatch):
    # A URL nothing listens on: the digits source must not touch the network.
    write_params(tmp_path, {"data.source": "digits", "data.url": "http://127.0.0.1:9/none.tar.gz"})
    monkeypatch.chdir(tmp_path)
    load_stage("download").main(["data/a.tar.gz"])
    cifar.build_digits_archive(tmp_path / "expected.tar.gz")
    assert (tmp_path / "data" / "a.tar.gz").read_bytes() == (tmp_path / "expected.tar.gz").read_bytes()
    assert left_in(tmp_path / "data") == ["a.tar.gz"]
