"""Inputs for the scoring tests: bad members, and zip or tar archives written from a folder."""

import io
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import tifffile

# Two real patients, six slices each (with their ground-truth masks, which scoring must ignore).
REAL_PATIENTS = ("TCGA_CS_4942_19970222", "TCGA_CS_4943_20000902")
REAL_SLICE_NUMBERS = (1, 2, 10, 11, 12, 20)
BAD_PATIENT = "BAD_0001"

# Bad members and the words their error reason must contain.
BAD_MEMBERS = {
    f"{BAD_PATIENT}/{BAD_PATIENT}_1.tif": "empty",
    f"{BAD_PATIENT}/{BAD_PATIENT}_2.tif": "8-bit",
    f"{BAD_PATIENT}/{BAD_PATIENT}_3.png": "expected shape",
    f"{BAD_PATIENT}/{BAD_PATIENT}_4.png": "3 channels",
    f"{BAD_PATIENT}/{BAD_PATIENT}_5.tif": "cannot decode TIFF",
    f"{BAD_PATIENT}/{BAD_PATIENT}_6.jpg": "not a readable PNG or JPEG",
    f"{BAD_PATIENT}/{BAD_PATIENT}_7.tif": "cannot decode TIFF",
    f"{BAD_PATIENT}/scans.zip": "nested archive",
}
IGNORED_FILES = ("notes.txt", f"{BAD_PATIENT}/.DS_Store")


def write_bad_members(root: Path, real_slice: Path) -> None:
    """Write the files of BAD_MEMBERS under `root`; `real_slice` supplies bytes to truncate."""
    folder = root / BAD_PATIENT
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (folder / f"{BAD_PATIENT}_1.tif").write_bytes(b"")
    tifffile.imwrite(folder / f"{BAD_PATIENT}_2.tif", rng.integers(0, 65535, (256, 256, 3), dtype=np.uint16), photometric="rgb")
    cv2.imwrite(str(folder / f"{BAD_PATIENT}_3.png"), rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / f"{BAD_PATIENT}_4.png"), rng.integers(0, 255, (256, 256), dtype=np.uint8))
    (folder / f"{BAD_PATIENT}_5.tif").write_text("this is not an image\n")
    (folder / f"{BAD_PATIENT}_6.jpg").write_text("neither is this\n")
    data = real_slice.read_bytes()
    (folder / f"{BAD_PATIENT}_7.tif").write_bytes(data[: len(data) // 3])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as nested:
        nested.writestr("inner/inner_1.tif", data)
    (folder / "scans.zip").write_bytes(buffer.getvalue())


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    """Write every file under `folder` into a zip archive, names relative to `folder` behind `prefix`."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def tar_folder(folder: Path, target: Path, mode: str = "w:gz") -> Path:
    """Write every file under `folder` into a tar archive, names relative to `folder`."""
    with tarfile.open(target, mode) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.add(path, path.relative_to(folder).as_posix())
    return target


def add_tar_member(archive: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    """Append one member of any type to an open tar archive."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def add_zip_symlink(archive: zipfile.ZipFile, name: str, target: str) -> None:
    """Append a member that Unix unzip tools would restore as a symbolic link to `target`."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so external_attr contains the file mode
    info.external_attr = 0o120777 << 16
    archive.writestr(info, target)
