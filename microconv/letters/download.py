"""Fetch the official EMNIST archive and unpack the IDX files microconv reads.

NIST publishes EMNIST as one zip (``gzip.zip``, about 560 MB) holding
``gzip/emnist-<split>-<train|test>-<images-idx3|labels-idx1>-ubyte.gz``. The download

* is resumable: bytes go to ``gzip.zip.part``; a rerun asks the server only for the rest
  (an HTTP Range request) and starts over if the server ignores the range;
* is checked: the finished archive's MD5 (the value torchvision and NIST's mirrors publish)
  or a SHA-256 given by the caller must match before anything is unpacked. An archive from
  another ``url`` without a checksum cannot be checked: the result says so (``unchecked``),
  and the unpacked files are still read whole, so a damaged archive is found either way;
* is atomic: the archive and every unpacked file appear under their final names only when
  complete (write to a temporary name, then rename), so an interrupted run never leaves a
  half-written file that looks finished;
* fails offline with one sentence that says where to put the files by hand.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from microconv.errors import DataError
from microconv.letters.checkpoint import check_outputs, write_atomically
from microconv.letters.data import SPLITS, emnist_filename, file_digest, has_dataset, load_emnist
from microconv.resources import require_disk

OFFICIAL_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
OFFICIAL_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"    # as published with torchvision's EMNIST
ARCHIVE_NAME = "gzip.zip"
CHUNK = 1 << 20


def manual_instructions(dest_dir, datasets=("letters",)):
    names = ", ".join(f"emnist-{d}-{{train,test}}-{{images-idx3,labels-idx1}}-ubyte.gz"
                      for d in datasets)
    return (f"download {OFFICIAL_URL} on a machine with network access, unzip it, and put "
            f"{names} into {dest_dir} (or into a folder named by MICROCONV_DATA or --data-dir)")


def _fetch(url, part, progress, timeout):
    """Download url into ``part``, continuing after the bytes already there when possible."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "microconv"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:        # nothing left to fetch: the part is complete
            return have
        raise
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0                       # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done = have
        if progress:
            progress(done, total)
        with open(part, "ab" if resumed else "wb") as f:
            for piece in iter(lambda: response.read(CHUNK), b""):
                f.write(piece)
                done += len(piece)
                if progress:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done != total:
        raise DataError(f"download of {url} stopped after {done} of {total} bytes; run the "
                        "command again to continue where it stopped")
    return done


def _check_archive(path, expected_sha256, expected_md5):
    """Compare the archive's checksum with the expected one; the sha256 is returned."""
    sha256 = file_digest(path, "sha256")
    if expected_sha256 and sha256 != expected_sha256.lower():
        return sha256, f"SHA-256 is {sha256}, expected {expected_sha256}"
    if expected_md5:
        md5 = file_digest(path, "md5")
        if md5 != expected_md5.lower():
            return sha256, f"MD5 is {md5}, expected {expected_md5}"
    return sha256, None


def _extract(archive, dest_dir, datasets):
    """Unpack the wanted .gz members (wherever they sit in the zip) atomically into dest_dir."""
    wanted = {emnist_filename(d, s, k) + ".gz" for d in datasets for s in SPLITS
              for k in ("images", "labels")}
    written = []
    try:
        with zipfile.ZipFile(archive) as z:
            members = {Path(info.filename).name: info for info in z.infolist()
                       if Path(info.filename).name in wanted}
            missing = sorted(wanted - set(members))
            if missing:
                raise DataError(f"{archive} lacks {', '.join(missing)}")
            require_disk(sum(info.file_size for info in members.values()), dest_dir,
                         f"unpacking {archive}")
            for name, info in sorted(members.items()):
                def copy(out, info=info):
                    with z.open(info) as src:
                        shutil.copyfileobj(src, out, CHUNK)
                write_atomically(dest_dir / name, copy, error=DataError)
                written.append(dest_dir / name)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot unpack {archive}: {exc}") from None
    return written


def _read_every_split(dest_dir, datasets):
    """Read every split of the datasets, which checks every header and length (DataError)."""
    for dataset in datasets:
        for split in SPLITS:
            load_emnist(dest_dir, split, dataset)


def download_emnist(dest_dir, url=OFFICIAL_URL, progress=None, expected_sha256=None,
                    expected_md5=None, datasets=("letters",), keep_archive=False, timeout=60):
    """Download the EMNIST archive into dest_dir and unpack the given splits' IDX files.

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive. The official URL
    is checked against its published MD5 unless a checksum is given. Returns a dict with the
    destination, the unpacked files, the archive's sha256 and ``unchecked``: None, or a
    sentence saying that no checksum was given for another URL. Every failure is a DataError.
    """
    dest_dir = Path(dest_dir)
    archive = dest_dir / ARCHIVE_NAME
    part = dest_dir / (ARCHIVE_NAME + ".part")
    outputs = [("the archive", archive), ("the partial download", part)]
    outputs += [("unpacked file", dest_dir / (emnist_filename(d, s, k) + ".gz"))
                for d in datasets for s in SPLITS for k in ("images", "labels")]
    source = urllib.parse.urlsplit(url)
    local = [("--url", urllib.request.url2pathname(source.path))] if source.scheme == "file" else []
    check_outputs(outputs, local, error=DataError)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest_dir}: {exc.strerror or exc}") from None
    unchecked = None
    if url == OFFICIAL_URL and not expected_sha256 and not expected_md5:
        expected_md5 = OFFICIAL_MD5
    elif not expected_sha256 and not expected_md5:
        unchecked = (f"the archive from {url} was not checked against a checksum (give "
                     "--sha256 to check it); its files were read whole and are well formed")
    if not archive.exists() and all(has_dataset(dest_dir, d) for d in datasets):
        try:
            _read_every_split(dest_dir, datasets)
            return {"dest": str(dest_dir), "files": [], "archive_sha256": None,
                    "already_present": True}
        except DataError:
            pass                               # damaged files: download them again
    if not archive.exists():
        try:
            _fetch(url, part, progress, timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            kept = (f"; {part.stat().st_size} bytes are kept in {part} and a rerun continues"
                    if part.exists() and part.stat().st_size else "")
            raise DataError(f"cannot download {url} ({reason}){kept}. To install by hand: "
                            f"{manual_instructions(dest_dir, datasets)}") from None
        sha256, problem = _check_archive(part, expected_sha256, expected_md5)
        if problem:
            part.unlink(missing_ok=True)
            raise DataError(f"the downloaded archive is damaged ({problem}); it was removed, "
                            "run the command again")
        os.replace(part, archive)
    else:
        sha256, problem = _check_archive(archive, expected_sha256, expected_md5)
        if problem:
            raise DataError(f"{archive} is damaged ({problem}); delete it and run again")
    files = _extract(archive, dest_dir, datasets)
    _read_every_split(dest_dir, datasets)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return {"dest": str(dest_dir), "files": [str(f) for f in files], "archive_sha256": sha256,
            "already_present": False, "unchecked": unchecked}
