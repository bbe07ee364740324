"""Objects in Amazon S3 and S3-compatible stores, addressed as `s3://bucket/key` URIs.

Credentials come from the standard AWS chain that boto3 and pyarrow both follow: environment
variables, the shared config and credentials files (AWS_PROFILE), then an instance or task role.
An S3-compatible store (MinIO, Ceph, a local test server) is chosen with AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL, the variables boto3 reads. This module gives pyarrow's S3 filesystem the same endpoint.

Every failure of a request becomes an `S3Error` that names the bucket and key and says what to do:
object or bucket not found, access denied, no credentials, endpoint unreachable.
"""

import functools
import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

SCHEME = "s3://"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
DEFAULT_REGION = "us-east-1"

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


class S3Error(OSError):
    """A request to S3 that failed, with the URI it was for and the reason."""

    def __init__(self, uri: str, reason: str):
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri}: {reason}")


class S3NotFoundError(S3Error, FileNotFoundError):
    """The bucket or the object does not exist. Code that handles FileNotFoundError handles it too."""


@dataclass(frozen=True)
class S3Uri:
    """A bucket and a key (or key prefix) inside it."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> "S3Uri":
        """Split `s3://bucket/key` into its parts.

        Raises:
            ValueError: not an s3:// URI, or no bucket name.
        """
        text = str(uri)
        if not is_s3(text):
            raise ValueError(f"{text}: not an S3 URI; expected s3://bucket/key")
        bucket, _, key = text[len(SCHEME):].partition("/")
        # s3://bucket//prefix means s3://bucket/prefix; a key that starts with '/' is almost always a typo.
        key = key.lstrip("/")
        if not bucket:
            raise ValueError(f"{text}: the S3 URI has no bucket name; expected s3://bucket/key")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    def join(self, *parts: str) -> "S3Uri":
        """Return the URI of `parts` below this one, joined with '/'."""
        pieces = [self.key.rstrip("/")] + [str(part).strip("/") for part in parts]
        return S3Uri(self.bucket, "/".join(piece for piece in pieces if piece))

    @property
    def folder_key(self) -> str:
        """The key as a folder prefix: empty for the whole bucket, else ending in '/'."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""


def is_s3(location) -> bool:
    """Return whether `location` is an s3:// URI rather than a local path.

    Raises:
        ValueError: a mistyped URI such as `s3:/bucket` or `S3://bucket`, which would otherwise be
            taken as a local path and silently written to a folder named `s3:`.
    """
    text = str(location)
    if text.startswith(SCHEME):
        return True
    if text[:3].lower() == "s3:":
        raise ValueError(f"{text}: not a valid S3 URI; write it as s3://bucket/key, with a lower-case 's3' and two slashes")
    return False


def endpoint_url() -> str | None:
    """Return the S3 endpoint override from the environment, or None for AWS itself."""
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def client():
    """Return a boto3 S3 client for the current endpoint and region (one per process and setting)."""
    return _client(endpoint_url(), region())


@functools.lru_cache(maxsize=8)
def _client(endpoint: str | None, region_name: str):
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region_name, config=config)
    except ValueError as error:  # botocore's "Invalid endpoint: ..."
        raise ValueError(
            f"S3 endpoint '{endpoint}' from {'/'.join(ENDPOINT_VARIABLES)} is not valid ({error}); "
            "expected a URL such as http://127.0.0.1:9000"
        ) from None


def filesystem():
    """Return a pyarrow S3 filesystem with the same endpoint and region as `client()`.

    Ray Data and Ray Train take it as `filesystem=` and `storage_filesystem=`, with paths written
    as `bucket/key` (no scheme).
    """
    from pyarrow import fs

    endpoint = endpoint_url()
    options = {"region": region()}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    return fs.S3FileSystem(**options)


def arrow_path(uri: str) -> str:
    """Return `bucket/key`, the form pyarrow filesystems and Ray take along with `filesystem()`."""
    parsed = S3Uri.parse(uri)
    return f"{parsed.bucket}/{parsed.key}".rstrip("/")


@contextmanager
def explained_errors(uri: str) -> Iterator[None]:
    """Turn the boto3 errors raised inside the block into an `S3Error` about `uri`."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except ClientError as error:
        raise _client_error(uri, error) from None
    except NoCredentialsError:
        raise S3Error(
            uri,
            "no AWS credentials found. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
            "or run where an instance role provides them",
        ) from None
    except EndpointConnectionError as error:
        raise S3Error(
            uri, f"cannot connect to the S3 endpoint {error.kwargs.get('endpoint_url', '')}; check {ENDPOINT_VARIABLES[0]} and the network"
        ) from None
    except BotoCoreError as error:
        raise S3Error(uri, f"request failed ({type(error).__name__}: {error})") from None


def _client_error(uri: str, error) -> S3Error:
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    bucket = S3Uri.parse(uri).bucket
    if code == "NoSuchBucket":
        return S3NotFoundError(uri, f"bucket '{bucket}' not found")
    if code in _NOT_FOUND_CODES:
        return S3NotFoundError(uri, "object not found")
    if code in ("412", "PreconditionFailed"):
        return S3Error(uri, "the object was replaced while it was being read; run again")
    if code in _DENIED_CODES:
        return S3Error(
            uri,
            f"access denied ({code}); the credentials in use need s3:GetObject, s3:PutObject and "
            f"s3:ListBucket on bucket '{bucket}'",
        )
    message = details.get("Message") or str(error)
    return S3Error(uri, f"request failed ({code}: {message})")


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Return the whole object at `uri`, or only its first `max_bytes` bytes.

    Raises:
        S3NotFoundError: no such bucket or object.
        S3Error: any other failure, with the reason.
    """
    location = S3Uri.parse(uri)
    with explained_errors(uri):
        body = client().get_object(Bucket=location.bucket, Key=location.key)["Body"]
        try:
            return body.read(max_bytes)
        finally:
            body.close()


def write_bytes(uri: str, data: bytes) -> None:
    """Store `data` at `uri`. A single PUT, so readers see the old object or the whole new one."""
    location = S3Uri.parse(uri)
    with explained_errors(uri):
        client().put_object(Bucket=location.bucket, Key=location.key, Body=data)


def exists(uri: str) -> bool:
    """Return whether an object exists at `uri` (a key, not a prefix).

    Raises:
        S3NotFoundError: the bucket does not exist.
        S3Error: access denied or another failure.
    """
    location = S3Uri.parse(uri)
    with explained_errors(uri):
        try:
            client().head_object(Bucket=location.bucket, Key=location.key)
        except Exception as error:
            if _is_missing_object(error):
                check_bucket(uri)
                return False
            raise
    return True


def check_bucket(uri: str) -> None:
    """Raise a clear error now if the bucket of `uri` is missing or cannot be reached.

    Raises:
        S3NotFoundError: the bucket does not exist.
        S3Error: access denied, no credentials or an unreachable endpoint.
    """
    location = S3Uri.parse(uri)
    with explained_errors(f"{SCHEME}{location.bucket}"):
        try:
            client().head_bucket(Bucket=location.bucket)
        except Exception as error:
            if _is_missing_object(error):
                raise S3NotFoundError(uri, f"bucket '{location.bucket}' not found") from None
            raise


def list_objects(uri: str) -> list[str]:
    """Return the sorted URIs of every object under the folder `uri` (the prefix plus '/').

    Raises:
        S3NotFoundError: the bucket does not exist.
        S3Error: any other failure.
    """
    location = S3Uri.parse(uri)
    prefix = location.folder_key
    found = []
    with explained_errors(uri):
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
        for page in pages:
            found += [f"{SCHEME}{location.bucket}/{item['Key']}" for item in page.get("Contents", [])]
    return sorted(found)


def list_object_sizes(uri: str) -> dict[str, int]:
    """Return the URI and size in bytes of every object under the folder `uri`, in key order.

    Raises:
        S3NotFoundError: the bucket does not exist.
        S3Error: any other failure.
    """
    location = S3Uri.parse(uri)
    found = {}
    with explained_errors(uri):
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.folder_key)
        for page in pages:
            for item in page.get("Contents", []):
                found[f"{SCHEME}{location.bucket}/{item['Key']}"] = int(item["Size"])
    return dict(sorted(found.items()))


def open_object(uri: str, buffer_size: int = 2**20) -> io.BufferedReader:
    """Open the object at `uri` as a seekable binary file that zipfile and tarfile can read.

    Nothing is downloaded up front: each refill of the buffer is one ranged GET of `buffer_size`
    bytes, so a zip member costs a GET or two and a sequential read costs size / `buffer_size` GETs.
    Every GET names the ETag seen when the object was opened, so an object replaced while it is
    being read fails with an S3Error instead of mixing two versions.

    Raises:
        S3NotFoundError: no such bucket or object (when opened).
        S3Error: any other failure, when opened or on a later read.
    """
    location = S3Uri.parse(uri)
    with explained_errors(uri):
        try:
            head = client().head_object(Bucket=location.bucket, Key=location.key)
        except Exception as error:
            if _is_missing_object(error):
                check_bucket(uri)
                raise S3NotFoundError(uri, "object not found") from None
            raise
    return io.BufferedReader(_RangedObjectReader(location, int(head["ContentLength"]), head["ETag"]), buffer_size)


class _RangedObjectReader(io.RawIOBase):
    """Raw reader of one object version for `open_object`: a ranged GET per `readinto`."""

    def __init__(self, location: S3Uri, size: int, etag: str):
        super().__init__()
        self.location = location
        self.size = size
        self.etag = etag
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origins = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}
        position = origins[whence] + offset
        if position < 0:
            raise ValueError(f"{self.location}: cannot seek to {position}, before the start of the object")
        self.position = position
        return position

    def readinto(self, buffer) -> int:
        if self.position >= self.size or len(buffer) == 0:
            return 0
        last = min(self.position + len(buffer), self.size) - 1
        uri = str(self.location)
        with explained_errors(uri):
            response = client().get_object(
                Bucket=self.location.bucket, Key=self.location.key, Range=f"bytes={self.position}-{last}", IfMatch=self.etag
            )
            data = response["Body"].read()
        if len(data) != last - self.position + 1:
            raise S3Error(uri, f"a ranged read of bytes {self.position}-{last} returned {len(data)} bytes")
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def delete(uri: str) -> None:
    """Delete the object at `uri`; a missing object is not an error."""
    location = S3Uri.parse(uri)
    with explained_errors(uri):
        client().delete_object(Bucket=location.bucket, Key=location.key)


def delete_folder(uri: str) -> int:
    """Delete every object under the folder `uri` and return how many there were."""
    objects = list_objects(uri)
    location = S3Uri.parse(uri)
    with explained_errors(uri):
        for start in range(0, len(objects), 1000):  # DeleteObjects takes at most 1,000 keys
            keys = [{"Key": S3Uri.parse(item).key} for item in objects[start : start + 1000]]
            client().delete_objects(Bucket=location.bucket, Delete={"Objects": keys, "Quiet": True})
    return len(objects)


def download_folder(uri: str, destination) -> int:
    """Copy every object under the folder `uri` into the local folder `destination`; return the count.

    Raises:
        S3NotFoundError: the bucket is missing or the prefix contains no object.
    """
    from pathlib import Path

    destination = Path(destination)
    objects = list_objects(uri)
    if not objects:
        raise S3NotFoundError(uri, "no objects under this prefix")
    folder_key = S3Uri.parse(uri).folder_key
    for item in objects:
        relative = S3Uri.parse(item).key[len(folder_key):]
        if not relative or relative.endswith("/"):
            continue  # a zero-byte "folder" marker that some tools create
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(item))
    return len(objects)


def upload_folder(source, uri: str) -> int:
    """Copy every file under the local folder `source` to the folder `uri`; return the count."""
    from pathlib import Path

    source = Path(source)
    count = 0
    for path in sorted(source.rglob("*")):
        if path.is_file():
            write_bytes(str(S3Uri.parse(uri).join(path.relative_to(source).as_posix())), path.read_bytes())
            count += 1
    return count


def _is_missing_object(error: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    return str(error.response.get("Error", {}).get("Code", "")) in _NOT_FOUND_CODES | {"NoSuchBucket"}
