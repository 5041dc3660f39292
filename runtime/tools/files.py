"""Read-only file tools confined to the session's ``work_dir`` attribute.

``read_file`` and ``list_files`` take paths relative to ``work_dir``. Refused:
absolute paths, any ``..`` component, a path whose real location (symlinks
followed) lies outside ``work_dir``, and a swap of a checked component for a
symlink between the check and the open (every component is opened relative to
its parent with ``O_NOFOLLOW``). With the ``work_root`` setting, ``work_dir``
itself must lie inside it: session attributes are the user's to set, so an
operator who exposes these tools to many users confines them there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.tools.registry import ToolContext, ToolError, ToolRegistry

READ_MAX_BYTES = 128 * 1024
READ_DEFAULT_BYTES = 64 * 1024
LIST_MAX_ENTRIES = 1000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)


def work_dir(context: ToolContext) -> Path:
    """The session's working directory (real path), checked against the root."""
    value = context.attributes.get("work_dir")
    if not isinstance(value, str) or not value:
        msg = "the session has no work_dir attribute"
        raise ToolError(msg)
    root = Path(os.path.realpath(value))
    if context.work_root is not None:
        allowed = Path(os.path.realpath(context.work_root))
        if root != allowed and allowed not in root.parents:
            msg = "the session's work_dir is outside the server's work root"
            raise ToolError(msg)
    if not root.is_dir():
        msg = "the session's work_dir is not a directory"
        raise ToolError(msg)
    return root


def relative_parts(path: str) -> list[str]:
    """The components of a relative path; absolute paths and ``..`` refused."""
    if not isinstance(path, str) or "\x00" in path:
        msg = "path must be a string"
        raise ToolError(msg)
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~"):
        msg = "path must be relative to the session's work_dir"
        raise ToolError(msg)
    parts = [part for part in pure.parts if part not in ("", ".")]
    if ".." in parts:
        msg = "path must not contain '..'"
        raise ToolError(msg)
    return parts


def open_confined(root: Path, parts: list[str], *, directory: bool) -> int:
    """Open ``root/parts`` as a file descriptor, refusing any way out of root."""
    real = Path(os.path.realpath(root.joinpath(*parts)))
    if real != root and root not in real.parents:
        msg = "path leads outside the session's work_dir"
        raise ToolError(msg)
    inside = list(real.relative_to(root).parts)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for index, part in enumerate(inside):
            last = index == len(inside) - 1
            flags = _DIR_FLAGS if (not last or directory) else _FILE_FLAGS
            try:
                child = os.open(part, flags, dir_fd=fd)
            except NotADirectoryError:
                msg = "path is not a directory"
                raise ToolError(msg) from None
            except FileNotFoundError:
                msg = "no such file or directory"
                raise ToolError(msg) from None
            except OSError:
                # ELOOP: a symlink appeared after the check
                msg = "path could not be opened safely"
                raise ToolError(msg) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Read a text file under ``work_dir`` (at most ``max_bytes`` from
    ``offset``)."""
    root = work_dir(context)
    parts = relative_parts(arguments["path"])
    if not parts:
        msg = "path names the work_dir itself, not a file"
        raise ToolError(msg)
    if not os.path.lexists(root.joinpath(*parts)):
        msg = "no such file or directory"
        raise ToolError(msg)
    limit = int(arguments.get("max_bytes", READ_DEFAULT_BYTES))
    offset = int(arguments.get("offset", 0))
    fd = open_confined(root, parts, directory=False)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        msg = "path is not a regular file"
        raise ToolError(msg)
    with os.fdopen(fd, "rb") as file:
        file.seek(offset)
        data = file.read(limit + 1)
    return {
        "path": "/".join(parts),
        "size": info.st_size,
        "offset": offset,
        "content": data[:limit].decode(errors="replace"),
        "truncated": len(data) > limit,
    }


def list_files(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """List a directory under ``work_dir`` (names, kinds and sizes, sorted)."""
    root = work_dir(context)
    parts = relative_parts(arguments.get("path", "."))
    fd = open_confined(root, parts, directory=True)
    try:
        names = sorted(os.listdir(fd))
        entries = []
        for name in names[:LIST_MAX_ENTRIES]:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            kind = (
                "directory"
                if stat.S_ISDIR(info.st_mode)
                else "symlink"
                if stat.S_ISLNK(info.st_mode)
                else "file"
                if stat.S_ISREG(info.st_mode)
                else "other"
            )
            entry: dict[str, Any] = {"name": name, "type": kind}
            if kind == "file":
                entry["size"] = info.st_size
            entries.append(entry)
    finally:
        os.close(fd)
    return {
        "path": "/".join(parts) or ".",
        "entries": entries,
        "truncated": len(names) > LIST_MAX_ENTRIES,
    }


def register_file_tools(registry: ToolRegistry) -> None:
    """Add ``read_file`` and ``list_files``."""
    registry.register(
        "read_file",
        read_file,
        description="Read a text file in the session's working directory.",
        parameters={
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Path relative to the working directory.",
                },
                "offset": {"type": "integer", "minimum": 0},
                "max_bytes": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": READ_MAX_BYTES,
                },
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    )
    registry.register(
        "list_files",
        list_files,
        description="List a directory in the session's working directory.",
        parameters={
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": "Directory relative to the working directory "
                    "(default: the working directory).",
                }
            },
            "additionalProperties": False,
        },
    )
