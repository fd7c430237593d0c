"""Server-side paths (pruning_core/server_paths.py): off unless PRUNING_EXPLORER_DATA_ROOT names a folder; a typed
path is read only when it resolves inside that folder, links followed, within the file size limit."""

from __future__ import annotations

import os

import pytest

from pruning_core.server_paths import (
    DATA_ROOT_VARIABLE,
    ServerPathError,
    data_root,
    read_server_file,
    resolve_server_path,
)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A data root with models/a.bin (5 bytes) and images/, and a secret file next to the root."""
    base = tmp_path / "root"
    (base / "models").mkdir(parents=True)
    (base / "images").mkdir()
    (base / "models" / "a.bin").write_bytes(b"12345")
    (tmp_path / "secret.txt").write_text("outside")
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(base))
    return base


def test_off_unless_the_variable_names_a_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_VARIABLE, raising=False)
    assert data_root() is None
    with pytest.raises(ServerPathError, match=f"off.*{DATA_ROOT_VARIABLE}="):
        resolve_server_path("anything")
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path / "missing"))
    assert data_root() is None
    with pytest.raises(ServerPathError, match=r"off \(.*missing', which is not a folder\)"):
        resolve_server_path("anything")


def test_relative_and_absolute_paths_inside_the_root(root):
    assert resolve_server_path("models/a.bin", "file") == root / "models" / "a.bin"
    assert resolve_server_path(str(root / "images"), "folder") == root / "images"
    assert resolve_server_path("  models/../images ", "any") == root / "images"
    assert read_server_file("models/a.bin") == (b"12345", "a.bin")


@pytest.mark.parametrize("typed", ["../secret.txt", "models/../../secret.txt", "/etc/passwd", "link-out",
                                   "models/../link-out"])
def test_paths_outside_the_root_are_refused_links_included(root, typed):
    (root / "link-out").symlink_to(root.parent / "secret.txt")
    with pytest.raises(ServerPathError, match="outside the data root"):
        read_server_file(typed)


def test_a_link_that_stays_inside_the_root_is_followed(root):
    (root / "latest").symlink_to(root / "models" / "a.bin")
    assert read_server_file("latest") == (b"12345", "a.bin")


def test_kind_existence_and_size_are_checked(root, monkeypatch):
    with pytest.raises(ServerPathError, match="is a folder; a file is expected"):
        resolve_server_path("images", "file")
    with pytest.raises(ServerPathError, match="is a file; a folder is expected"):
        resolve_server_path("models/a.bin", "folder")
    with pytest.raises(ServerPathError, match="does not exist inside the data root"):
        resolve_server_path("models/b.bin")
    with pytest.raises(ServerPathError, match="control characters"):
        resolve_server_path("models/a\x00.bin")
    os.mkfifo(root / "pipe")
    with pytest.raises(ServerPathError, match="not a regular file"):
        resolve_server_path("pipe")
    (root / "big.npz").write_bytes(bytes(2 << 20))
    monkeypatch.setenv("PRUNING_EXPLORER_MAX_FILE_MB", "1")
    with pytest.raises(ServerPathError, match="above this server's limit of 1 MiB"):
        read_server_file("big.npz")
    with pytest.raises(ServerPathError, match="at most 4 bytes is read"):
        read_server_file("models/a.bin", limit=4)
