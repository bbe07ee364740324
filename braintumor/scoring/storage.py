"""Output storage of batch scoring: a small interface, and its local-folder and S3 implementations.

Names are relative and '/'-separated, and every write is all-or-nothing: a reader finds the whole
object or none of it. Scoring needs nothing else from a store. A local folder gets this from a
temporary file and a rename, and S3 from its PUT, which stores the whole object or nothing.
"""

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path

from braintumor import locations, s3
from braintumor.scoring.sources import UnsafeNameError, safe_member_name

_PARTIAL_NAME = re.compile(r"^\..+\.partial-[0-9a-f]{32}$")


class OutputStorage(ABC):
    """A flat store of named byte objects, with folders only as name prefixes."""

    @abstractmethod
    def write_bytes(self, name: str, data: bytes) -> None:
        """Store `data` under `name`, replacing any object there. Readers never see part of it."""

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """Return the object `name`, or raise FileNotFoundError if there is none."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Return whether a complete object `name` exists."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Return the sorted names of the complete objects under the folder `prefix`."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object `name` if it exists."""

    @abstractmethod
    def uri(self, name: str = "") -> str:
        """Return where `name` (or the store itself) is, for logs and tables."""

    def remove_partial_writes(self) -> int:
        """Delete the partial files of writes that a killed job cut short, and return their count.

        Stores whose writes leave nothing behind (an object store) keep this default.
        """
        return 0


class LocalStorage(OutputStorage):
    """Objects as files under a root folder. Each write goes to a temporary name and is then renamed.

    NOTE: files are not fsynced, so a write is all-or-nothing when the job is killed but not when
    the machine loses power.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def write_bytes(self, name: str, data: bytes) -> None:
        # Writes `.<name>.partial-<hex>` first, the pattern remove_partial_writes looks for.
        locations.write_bytes(self._path(name), data)

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix) if prefix else self.root
        if not folder.is_dir():
            return []
        names = []
        for parent, _, files in os.walk(folder):
            for file_name in files:
                if not _PARTIAL_NAME.match(file_name):
                    names.append((Path(parent) / file_name).relative_to(self.root).as_posix())
        return sorted(names)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def uri(self, name: str = "") -> str:
        return str(self._path(name)) if name else str(self.root)

    def remove_partial_writes(self) -> int:
        removed = 0
        if not self.root.is_dir():
            return removed
        for parent, _, files in os.walk(self.root):
            for file_name in files:
                if _PARTIAL_NAME.match(file_name):
                    (Path(parent) / file_name).unlink(missing_ok=True)
                    removed += 1
        return removed

    def _path(self, name: str) -> Path:
        """Join `name` to the root, rejecting a name or an existing symbolic link that leads outside it."""
        path = self.root / safe_member_name(name)
        # realpath resolves the links among the folders that already exist, so a link placed
        # inside the output folder cannot redirect a write to somewhere else.
        resolved = Path(os.path.realpath(path))
        if resolved != self.root and self.root not in resolved.parents:
            raise UnsafeNameError(f"'{name}' resolves to {resolved}, outside the output folder {self.root}")
        return path


class S3Storage(OutputStorage):
    """Objects under an S3 prefix. Each write is a single PUT, which S3 applies whole or not at all.

    S3 does not resolve '..' in keys, so names go through `safe_member_name`. Every key is then the
    prefix, '/', and a name without empty, '.' or '..' components, and no name can leave the prefix.
    `exists` is one HEAD request, so the rerun check lists the output once instead of calling it per slice.
    """

    def __init__(self, uri: str):
        location = s3.S3Uri.parse(uri)
        self.root = s3.S3Uri(location.bucket, location.key.rstrip("/"))

    def write_bytes(self, name: str, data: bytes) -> None:
        s3.write_bytes(self.uri(name), data)

    def read_bytes(self, name: str) -> bytes:
        return s3.read_bytes(self.uri(name))

    def exists(self, name: str) -> bool:
        return s3.exists(self.uri(name))

    def list(self, prefix: str) -> list[str]:
        folder = self.uri(prefix) if prefix else self.uri()
        root_key = self.root.folder_key
        names = [s3.S3Uri.parse(uri).key[len(root_key):] for uri in s3.list_objects(folder)]
        # Keys ending in '/' are the zero-byte "folder" markers some tools create, not outputs.
        return sorted(name for name in names if not name.endswith("/"))

    def delete(self, name: str) -> None:
        s3.delete(self.uri(name))

    def uri(self, name: str = "") -> str:
        if not name:
            return str(self.root).rstrip("/")
        return str(self.root.join(safe_member_name(name)))


def open_storage(location: str | Path) -> OutputStorage:
    """Return the storage for an output location: a local folder, or an `s3://bucket/prefix` URI.

    Raises:
        s3.S3NotFoundError: the S3 bucket does not exist.
        s3.S3Error: the bucket cannot be reached (access denied, no credentials, endpoint down).
        ValueError: a URL of another scheme, such as gs://bucket/prefix.
    """
    text = str(location)
    if s3.is_s3(text):
        storage = S3Storage(text)
        # Checked now, so that a missing bucket stops the job before any slice is read or scored.
        # check_bucket names only the bucket when credentials or access fail, so the error is
        # raised again naming the whole output URI.
        try:
            s3.check_bucket(storage.uri())
        except s3.S3Error as error:
            raise type(error)(storage.uri(), error.reason) from None
        return storage
    if "://" in text:
        raise ValueError(f"{text}: only local output folders and s3:// URIs are supported, so give a folder path or s3://bucket/prefix")
    return LocalStorage(text)
