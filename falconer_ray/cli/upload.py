"""Copy a run directory to object storage, and the `--upload URI` option of `jobs/`.

`--upload s3://bucket/prefix` copies what the command wrote, once it has succeeded: its
run directory (`--out` or RUN_DIR; the directory's contents land directly under the
URI), or for `bench` commands the `--json` file (as URI/NAME). Any URI `pyarrow.fs`
understands works: s3://, gs://, hdfs://, file:// or a local path.
"""

from __future__ import annotations

import sys
from pathlib import Path


class UploadError(ValueError):
    pass


def resolve(uri: str):
    """(filesystem, path) for a destination URI; a plain path is a local directory."""
    from pyarrow import fs

    if not uri or not uri.strip():
        raise UploadError("--upload needs a URI, e.g. s3://bucket/prefix, gs://bucket/prefix or file:///dir")
    if "://" not in uri:
        return fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for bad or unreachable URIs
        raise UploadError(f"cannot use --upload {uri}: {e}") from None
    if not path.strip("/"):
        raise UploadError(f"--upload {uri} names no bucket or directory")
    return filesystem, path


def upload(path: str | Path, uri: str) -> str:
    """Copy a directory's tree to uri, or a file to uri/NAME; returns the destination path."""
    from pyarrow import fs

    src = Path(path).resolve()
    if not src.exists():
        raise UploadError(f"nothing to upload: {src} does not exist")
    dest_fs, dest = resolve(uri)
    dest = dest.rstrip("/")
    dest_fs.create_dir(dest, recursive=True)
    if src.is_file():
        dest = f"{dest}/{src.name}"
    fs.copy_files(str(src), dest, source_filesystem=fs.LocalFileSystem(), destination_filesystem=dest_fs)
    return dest


def pop_upload(argv: list[str]) -> tuple[list[str], str | None]:
    """Split `--upload URI` / `--upload=URI` out of argv."""
    rest, uri = [], None
    it = iter(argv)
    for arg in it:
        if arg == "--upload":
            uri = next(it, None)
            if uri is None or uri.startswith("-"):
                raise UploadError("--upload needs a URI, e.g. s3://bucket/prefix")
        elif arg.startswith("--upload="):
            uri = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, uri


def output_of(argv: list[str]) -> Path:
    """What a `falconer` command line writes: its --out or RUN_DIR, else its --json file.

    Parsed by the CLI's own click commands (typer may vendor click: duck-typed).
    """
    import typer

    from falconer_ray.cli.main import app

    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("falconer", list(argv), resilient_parsing=True)
    while hasattr(cmd, "resolve_command"):  # a group: descend into the subcommand
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        _, cmd, rest = cmd.resolve_command(ctx, [*protected, *ctx.args])
        if cmd is None:
            raise UploadError(f"unknown command: falconer {' '.join(argv)}")
        ctx = cmd.make_context(cmd.name, rest, parent=ctx, resilient_parsing=True)
    path = ctx.params.get("out") or ctx.params.get("run_dir") or ctx.params.get("json_file")
    if path is None:
        raise UploadError(f"`falconer {' '.join(argv[:2])}` names nothing to upload: pass --out DIR (bench: --json FILE)")
    return Path(path)


def run_job(argv: list[str]) -> None:
    """Run `falconer ARGV`; when it succeeds and --upload was given, upload what it wrote."""
    from falconer_ray.cli.main import app

    try:
        argv, uri = pop_upload(argv)
        if uri is not None:
            resolve(uri)  # fail before hours of work, not after
            output = output_of(argv)
    except Exception as e:  # bad URI, or a command line click cannot parse
        sys.exit(f"error: {e}")
    try:
        app(argv)
    except SystemExit as e:  # typer always exits; only a failure stops here
        if e.code not in (0, None):
            raise
    if uri is None or "--help" in argv:
        return
    try:
        dest = upload(output, uri)
    except Exception as e:
        sys.exit(f"error: upload of {output} to {uri} failed: {e}")
    print(f"uploaded {output} to {uri} ({dest})")
