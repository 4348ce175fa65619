"""Downloading EMNIST: a small archive served on 127.0.0.1, resumed, checked and unpacked."""

import hashlib
import http.server
import io
import socket
import threading
import zipfile

import pytest

from microconv.errors import DataError
from microconv.letters import data, download, synth


def make_archive(tmp_path):
    """A zip laid out like NIST's gzip.zip, holding a tiny generated letters set."""
    files = synth.write_emnist_files(tmp_path / "src", train_size=26, test_size=26, seed=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(files.glob("emnist-*")):
            z.write(path, f"gzip/{path.name}")
        z.writestr("gzip/emnist-digits-test-labels-idx1-ubyte.gz", b"not wanted")
    return buffer.getvalue()


class Server:
    """Serves one blob at /gzip.zip; honours Range requests unless ranges=False."""

    def __init__(self, blob, ranges=True):
        self.blob = blob
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.headers.get("Range"))
                start = 0
                wanted = self.headers.get("Range")
                if ranges and wanted and wanted.startswith("bytes="):
                    start = int(wanted[len("bytes="):].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(outer.blob) - 1}/{len(outer.blob)}")
                else:
                    self.send_response(200)
                body = outer.blob[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/gzip.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_checks_unpacks_and_reports_progress(tmp_path):
    blob = make_archive(tmp_path)
    seen = []
    with Server(blob) as server:
        result = download.download_emnist(
            tmp_path / "dest", url=server.url, progress=lambda done, total: seen.append(
                (done, total)), expected_sha256=hashlib.sha256(blob).hexdigest())
    assert seen[-1] == (len(blob), len(blob))
    assert len(result["files"]) == 4
    images, labels = data.load_emnist(tmp_path / "dest", "test")
    assert images.shape == (26, 28, 28) and sorted(labels.tolist()) == list(range(26))
    leftovers = [p.name for p in (tmp_path / "dest").iterdir() if not p.name.startswith("emnist-")]
    assert leftovers == []                         # no archive, no temp files
    with Server(blob) as server:                   # a second call finds the files in place
        again = download.download_emnist(tmp_path / "dest", url=server.url)
        assert again["already_present"] and server.requests == []


@pytest.mark.parametrize("ranges", [True, False])
def test_an_interrupted_download_continues(tmp_path, ranges):
    blob = make_archive(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    half = len(blob) // 2
    (dest / "gzip.zip.part").write_bytes(blob[:half])
    with Server(blob, ranges=ranges) as server:
        download.download_emnist(dest, url=server.url, expected_md5=hashlib.md5(blob).hexdigest())
    assert server.requests == [f"bytes={half}-"]
    assert data.has_dataset(dest)


def test_a_damaged_download_is_refused_and_removed(tmp_path):
    blob = make_archive(tmp_path)
    with Server(blob) as server:
        with pytest.raises(DataError, match="damaged .*SHA-256"):
            download.download_emnist(tmp_path / "dest", url=server.url,
                                     expected_sha256="0" * 64)
    assert not any((tmp_path / "dest").iterdir())


def test_offline_says_where_to_put_the_files(tmp_path):
    with socket.socket() as s:                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as caught:
        download.download_emnist(tmp_path / "dest", url=f"http://127.0.0.1:{port}/gzip.zip",
                                 timeout=5)
    message = str(caught.value)
    assert "cannot download" in message and "by hand" in message
    assert str(tmp_path / "dest") in message and "emnist-letters" in message
    assert "\n" not in message


def test_archive_without_the_letters_is_reported(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("gzip/readme.txt", "nothing here")
    with Server(buffer.getvalue()) as server:
        with pytest.raises(DataError, match="lacks emnist-letters"):
            download.download_emnist(tmp_path / "dest", url=server.url)
