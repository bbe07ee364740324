"""Files that may be local or in S3: one set of functions that take a path or an `s3://` URI.

Jobs take either form wherever they take a path. A location is kept as a string for S3 and as a
`Path` locally, and `join` keeps that form. Writes are all-or-nothing in both: a local file is
written under a temporary name and renamed, and an S3 object is written by a single PUT.
"""

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from braintumor import s3

Location = str | os.PathLike


def as_location(location: Location) -> str | Path:
    """Return `location` as an S3 URI string or as a local `Path`."""
    return str(location) if s3.is_s3(location) else Path(location)


def join(location: Location, *parts: str) -> str | Path:
    """Return `parts` joined below `location`, keeping the S3 or local form."""
    if s3.is_s3(location):
        return str(s3.S3Uri.parse(str(location)).join(*parts))
    return Path(location).joinpath(*parts)


def absolute(location: Location) -> str:
    """Return `location` as text that names the same place from any working folder: an S3 URI as it is, a local path resolved."""
    return str(location) if s3.is_s3(location) else str(Path(location).resolve())


def name(location: Location) -> str:
    """Return the last part of the location: the file name or the key's last segment."""
    return str(location).rstrip("/").rsplit("/", 1)[-1] if s3.is_s3(location) else Path(location).name


def parent(location: Location) -> str | Path:
    """Return the folder that contains `location`."""
    if s3.is_s3(location):
        text = str(location).rstrip("/")
        head = text.rsplit("/", 1)[0]
        return head if len(head) > len(s3.SCHEME) else text
    return Path(location).parent


def read_bytes(location: Location) -> bytes:
    """Return the contents of a file or object.

    Raises:
        FileNotFoundError: it does not exist (s3.S3NotFoundError for S3).
        s3.S3Error: another S3 failure, naming the bucket and key.
    """
    if s3.is_s3(location):
        return s3.read_bytes(str(location))
    return Path(location).read_bytes()


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: Location, data: bytes) -> None:
    """Write `data` all-or-nothing, creating local parent folders as needed."""
    if s3.is_s3(location):
        s3.write_bytes(str(location), data)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_text(location: Location, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def is_file(location: Location) -> bool:
    """Return whether a file (or an S3 object) exists at `location`."""
    return s3.exists(str(location)) if s3.is_s3(location) else Path(location).is_file()


def make_folder(location: Location) -> None:
    """Create a local folder with its parents. S3 has no folders, so only the bucket is checked there."""
    if s3.is_s3(location):
        s3.check_bucket(str(location))
    else:
        Path(location).mkdir(parents=True, exist_ok=True)


def arrow_filesystem(location: Location):
    """Return `(filesystem, path)` for pyarrow and Ray Data: an S3 filesystem and `bucket/key`, or None and an absolute path."""
    if s3.is_s3(location):
        return s3.filesystem(), s3.arrow_path(str(location))
    return None, str(Path(location).resolve())


@contextmanager
def staging_folder(location: Location) -> Iterator[Path]:
    """Yield a local folder whose files end up at `location`.

    Locally that is `location` itself, created if missing. For S3 it is a temporary folder whose
    files are uploaded, one object each, when the block ends without an error. Objects already
    under the prefix stay unless a file of the same name replaces them. The bucket is checked
    first, so a missing bucket fails before any work is done.
    """
    if not s3.is_s3(location):
        folder = Path(location)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    s3.check_bucket(str(location))
    with tempfile.TemporaryDirectory(prefix="braintumor-s3-") as folder:
        yield Path(folder)
        s3.upload_folder(folder, str(location))
