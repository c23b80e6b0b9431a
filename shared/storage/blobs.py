"""Blobs at the edge: the data account in Azure or Azurite, or a local folder, behind one ``Store``.

``BlobStore`` talks to a storage account through the same connection setting the bindings
use (``shared.storage.accounts``). ``FolderStore`` implements the same calls on a local
folder, so that the CLI can process a file with the very same code path and no Azure at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from shared.core.layout import BlobInfo
from shared.core.source import file_blocks
from shared.storage import accounts

__all__ = ["BlobInfo", "BlobStore", "FolderStore", "Store", "open_client"]

DOWNLOAD_CHUNK = 8 * 1024 * 1024


class Store(Protocol):
    def open_blocks(self, container: str, name: str) -> tuple[BlobInfo, Iterator[bytes]]: ...
    def info(self, container: str, name: str) -> BlobInfo: ...
    def upload_file(self, container: str, name: str, path: Path, content_type: str = ...) -> None: ...
    def upload_bytes(self, container: str, name: str, data: bytes, content_type: str = ...) -> None: ...
    def download_to(self, container: str, name: str, path: Path) -> None: ...
    def read_bytes(self, container: str, name: str) -> bytes: ...
    def list(self, container: str, prefix: str = "") -> Iterator[BlobInfo]: ...
    def delete(self, container: str, name: str) -> None: ...
    def copy(self, src: tuple[str, str], dst: tuple[str, str]) -> None: ...


def open_client(client: Any) -> tuple[BlobInfo, Iterator[bytes]]:
    """A blob's properties and its bytes in blocks, pinned to that version by ETag: if the blob
    is replaced mid-download the read fails (and is retried) instead of mixing two versions."""
    from azure.core import MatchConditions

    props = client.get_blob_properties()
    info = BlobInfo(client.container_name, client.blob_name, props.etag, props.last_modified, props.size)
    if props.size == 0:
        return info, iter(())
    downloader = client.download_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified, max_concurrency=2)
    return info, downloader.chunks()


class BlobStore:
    def __init__(self, service: Any | None = None) -> None:
        self.service = service or accounts.blob_service()

    def _blob(self, container: str, name: str) -> Any:
        return self.service.get_blob_client(container, name)

    def info(self, container: str, name: str) -> BlobInfo:
        p = self._blob(container, name).get_blob_properties()
        return BlobInfo(container, name, p.etag, p.last_modified, p.size)

    def open_blocks(self, container: str, name: str) -> tuple[BlobInfo, Iterator[bytes]]:
        return open_client(self._blob(container, name))

    def upload_file(self, container: str, name: str, path: Path, content_type: str = "application/octet-stream") -> None:
        from azure.storage.blob import ContentSettings

        with open(path, "rb") as fh:
            self._blob(container, name).upload_blob(
                fh, overwrite=True, max_concurrency=2, content_settings=ContentSettings(content_type=content_type)
            )

    def upload_bytes(self, container: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from azure.storage.blob import ContentSettings

        self._blob(container, name).upload_blob(data, overwrite=True, content_settings=ContentSettings(content_type=content_type))

    def download_to(self, container: str, name: str, path: Path) -> None:
        with open(path, "wb") as fh:
            self._blob(container, name).download_blob(max_concurrency=2).readinto(fh)

    def read_bytes(self, container: str, name: str) -> bytes:
        return self._blob(container, name).download_blob().readall()

    def list(self, container: str, prefix: str = "") -> Iterator[BlobInfo]:
        """The blobs under ``prefix``; none when the container does not exist (a fresh account)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            for b in self.service.get_container_client(container).list_blobs(name_starts_with=prefix or None):
                yield BlobInfo(container, b.name, b.etag, b.last_modified, b.size)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise

    def delete(self, container: str, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(container, name).delete_blob()
        except ResourceNotFoundError:
            pass

    def copy(self, src: tuple[str, str], dst: tuple[str, str]) -> None:
        """Streamed through this process: works with any credential, no SAS needed."""
        source = self._blob(*src)
        size = source.get_blob_properties().size
        data = source.download_blob().chunks() if size else iter([b""])
        self._blob(*dst).upload_blob(_Reader(data), length=size, overwrite=True)

    def ensure_containers(self, names: tuple[str, ...]) -> None:
        """Create each container that does not exist yet (one request each; 409 means it does).

        An identity that may write blobs but not create containers (a narrower role than
        Storage Blob Data Contributor) gets a 403: the containers are then assumed to exist,
        as the Bicep creates them, and the first write says so if they do not."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        for name in names:
            try:
                self.service.create_container(name)
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:
                if exc.status_code != 403:
                    raise


class _Reader:
    """A file-like view of an iterator of blocks, for streamed uploads."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self.blocks = blocks
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            try:
                self.buffer += next(self.blocks)
            except StopIteration:
                break
        if size < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


# --- a local folder -------------------------------------------------------------------------


class FolderStore:
    """Containers as sub-folders of ``root``: for processing local files without Azure."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, container: str, name: str) -> Path:
        target = (self.root / container / name).resolve()
        if not target.is_relative_to(self.root / container):
            raise ValueError(f"blob name escapes its container: {name!r}")
        return target

    def info(self, container: str, name: str) -> BlobInfo:
        st = self.path(container, name).stat()
        return BlobInfo(
            container, name, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', datetime.fromtimestamp(st.st_mtime, UTC), st.st_size
        )

    def open_blocks(self, container: str, name: str) -> tuple[BlobInfo, Iterator[bytes]]:
        return self.info(container, name), file_blocks(self.path(container, name), DOWNLOAD_CHUNK)

    def upload_file(self, container: str, name: str, path: Path, content_type: str = "") -> None:
        target = self.path(container, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def upload_bytes(self, container: str, name: str, data: bytes, content_type: str = "") -> None:
        target = self.path(container, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def download_to(self, container: str, name: str, path: Path) -> None:
        shutil.copyfile(self.path(container, name), path)

    def read_bytes(self, container: str, name: str) -> bytes:
        return self.path(container, name).read_bytes()

    def list(self, container: str, prefix: str = "") -> Iterator[BlobInfo]:
        base = self.root / container
        if not base.exists():
            return
        for p in sorted(base.rglob("*")):
            name = p.relative_to(base).as_posix()
            if p.is_file() and name.startswith(prefix) and not name.endswith(".partial"):
                yield self.info(container, name)

    def delete(self, container: str, name: str) -> None:
        self.path(container, name).unlink(missing_ok=True)

    def copy(self, src: tuple[str, str], dst: tuple[str, str]) -> None:
        self.upload_file(*dst, self.path(*src))
