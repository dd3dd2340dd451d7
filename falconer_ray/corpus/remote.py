"""Corpus files in object stores and remote file systems (s3://, gs://, hdfs://, abfs://),
read through `pyarrow.fs`.

A remote file travels to read tasks as its URI and is opened again there, with the
credentials of the worker's environment (AWS_* or GOOGLE_* variables, instance roles,
Kerberos...): no secret rides in a task or lands in config.json, so a URI that carries
one is refused. Store settings that are not secret ride in the URI's query, as pyarrow
reads them, e.g. `s3://bucket/corpus?endpoint_override=minio.internal:9000&scheme=http`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

from falconer_ray.corpus import CorpusError

SCHEMES = {"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"}
SECRET_QUERY = {"access_key", "secret_key", "session_token", "account_key", "sas_token", "client_secret"}


def is_remote(corpus: str | object) -> bool:
    """True for a URI with a scheme other than file:// (a Windows drive letter is not one)."""
    scheme = urlsplit(str(corpus)).scheme
    return len(scheme) > 1 and scheme != "file"


def check_uri(uri: str) -> str:
    """The corpus URI, if this can read it and it carries no secret; else a CorpusError
    that says what to fix (and does not repeat the secret)."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise CorpusError(f"{parts.scheme}:// is not a corpus location this can read; use a local path or one of "
                          + ", ".join(f"{s}://" for s in sorted(SCHEMES)))
    secrets = sorted(k for k, _ in parse_qsl(parts.query) if k in SECRET_QUERY)
    if parts.password or parts.username or secrets:
        raise CorpusError(f"the corpus URI carries credentials ({', '.join(secrets) or 'user:password@'}); set them "
                          "in the environment of the driver and the workers instead (AWS_ACCESS_KEY_ID, "
                          "GOOGLE_APPLICATION_CREDENTIALS, ...): a URI is written to config.json and logs")
    return uri


def _split(uri: str) -> tuple[str, str]:
    """(scheme://netloc/path, query) of a checked corpus URI."""
    check_uri(uri)
    return uri.split("?", 1)[0].rstrip("/"), urlsplit(uri).query


@cache
def _filesystem(base: str, query: str):
    """The pyarrow file system for one store (cached per process: S3 clients are slow to make)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, _ = pafs.FileSystem.from_uri(base + (f"?{query}" if query else ""))
    except (pa.ArrowException, ValueError) as e:
        raise CorpusError(f"cannot open {base}: {e}") from None
    return fs


def _store_root(uri: str) -> str:
    """scheme://netloc of a URI: the store its file system is made for."""
    return uri.split("://", 1)[0] + "://" + urlsplit(uri).netloc


def _store_path(uri: str) -> str:
    """The path pyarrow's file system gives to one URI (bucket/key for object stores)."""
    parts = urlsplit(uri)
    return parts.netloc + parts.path if parts.scheme in ("s3", "gs", "gcs") else parts.path


@dataclass(frozen=True)
class RemoteFile:
    """One remote corpus file: its URI, the store settings of the corpus URI, and the size
    and modification time seen when the corpus was listed (what a resume compares). It
    answers the few `Path` questions the readers ask of a file."""

    uri: str
    query: str = ""
    size: int = 0
    mtime_ns: int = 0

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def suffixes(self) -> list[str]:
        return PurePosixPath(self.name).suffixes

    def __str__(self) -> str:
        return self.uri

    def stat(self):
        return SimpleNamespace(st_size=self.size, st_mtime_ns=self.mtime_ns)

    def exists(self) -> bool:
        return True

    def is_symlink(self) -> bool:
        return False

    def open_stream(self):
        """The file's bytes as they are stored (a .gz stays compressed: the reader's
        guard decompresses it)."""
        return self._fs().open_input_stream(_store_path(self.uri), compression=None)

    def open_random(self):
        """The file with seeks, for Parquet's footer and row groups."""
        return self._fs().open_input_file(_store_path(self.uri))

    def _fs(self):
        return _filesystem(_store_root(self.uri), self.query)


def list_remote(corpus: str, keep) -> list[RemoteFile]:
    """The files under a corpus URI (or the one file it names) whose name `keep(name)`
    accepts, sorted; a CorpusError that says why when the URI cannot be listed."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    base, query = _split(corpus)
    fs, root = _filesystem(_store_root(base), query), _store_path(base)
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            found = [info]
        elif info.type == pafs.FileType.Directory:
            found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        else:
            raise CorpusError(f"corpus not found: {base}")
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"cannot list {base}: {e}") from None
    prefix = base[: len(base) - len(root)]  # scheme://, and the netloc where it is not part of the path
    files = [RemoteFile(prefix + i.path, query, i.size or 0, i.mtime_ns or 0) for i in found
             if i.type == pafs.FileType.File and keep(i.base_name)]
    if info.type == pafs.FileType.File and not files:
        raise CorpusError(f"{base}: unknown file type")
    return sorted(files, key=lambda f: f.uri)


def relative(file: RemoteFile, corpus: str) -> str:
    """The file's name in doc ids: its path below the corpus URI, or its name when the
    URI names the file itself."""
    base = _split(corpus)[0]
    return file.name if file.uri == base else file.uri[len(base):].lstrip("/")
