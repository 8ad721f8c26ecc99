"""StorageLock: one daemon per store (flock on <storage>/raccoon-watch.lock, the holder's PID inside)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import structlog

from raccoon_watch.store.lock import LOCK_NAME, StorageLock, StorageLocked, read_holder


def test_a_second_lock_on_the_same_store_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    first = StorageLock(tmp_path / "var")
    assert first.acquire() and first.held
    assert read_holder(tmp_path / "var" / LOCK_NAME) == os.getpid()
    with pytest.raises(StorageLocked) as refused:
        StorageLock(tmp_path / "var").acquire()  # another open file: flock refuses it as it would another process
    assert refused.value.holder_pid == os.getpid() and f"PID {os.getpid()}" in str(refused.value)
    first.release()
    assert not first.held and (tmp_path / "var" / LOCK_NAME).read_text() == ""
    again = StorageLock(tmp_path / "var")
    assert again.acquire()  # released: the next daemon gets it
    again.release()


@pytest.mark.parametrize("content, expected", [
    ("4242\n", 4242), ("", None), ("not a pid", None), ("-1", None), ("9" * 100, None),
])
def test_read_holder(tmp_path: Path, content: str, expected: int | None) -> None:
    (tmp_path / LOCK_NAME).write_text(content)
    assert read_holder(tmp_path / LOCK_NAME) == expected


def test_an_unusable_folder_is_no_lock_and_no_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the storage folder's parent should be")
    lock = StorageLock(tmp_path / "file" / "var")
    with structlog.testing.capture_logs() as logs:
        assert lock.acquire() is False
    assert not lock.held and [e["event"] for e in logs] == ["storage_lock_unavailable"]


def test_a_deleted_lock_file_is_locked_again(tmp_path: Path) -> None:
    lock = StorageLock(tmp_path / "var")
    lock.acquire()
    shutil.rmtree(tmp_path / "var")  # rm -rf of the storage folder: a second daemon could lock a new file
    with structlog.testing.capture_logs() as logs:
        lock.check()
    assert [e["event"] for e in logs] == ["storage_lock_renewed"]
    assert read_holder(tmp_path / "var" / LOCK_NAME) == os.getpid()
    with pytest.raises(StorageLocked):
        StorageLock(tmp_path / "var").acquire()
    with structlog.testing.capture_logs() as quiet:
        lock.check()  # the same file: nothing to do
    assert quiet == []
    lock.release()
