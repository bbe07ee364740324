"""Output storage of batch scoring: a small interface and its local-folder implementation.

Names are relative and '/'-separated, and every write is all-or-nothing: a reader finds the whole
object or none of it. Scoring needs nothing else from a store, so an object store such as S3 can
implement the same interface (a PUT is already all-or-nothing there).
"""

import os
import re
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

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
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex}")
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

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


def open_storage(location: str | Path) -> OutputStorage:
    """Return the storage for an output location. Only local folders are implemented so far.

    Raises:
        ValueError: a URL such as s3://bucket/prefix.
    """
    text = str(location)
    if "://" in text:
        raise ValueError(f"{text}: only local output folders are supported for now, so give a folder path")
    return LocalStorage(text)
