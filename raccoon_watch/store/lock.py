"""One daemon per store: an exclusive ``fcntl.flock`` on ``<storage.path>/raccoon-watch.lock``.

Two daemons on one ``events.db`` both write it: every visit becomes two events, neither in the
other's cooldown, and each is pushed twice. ``StorageLock.acquire`` is the first thing a daemon does
(``App.start``), before the model loads or a camera opens; a second daemon on the same store gets
``StorageLocked``, which names the holder's PID (the holder writes it into the file), and exits 2.

``flock`` locks belong to the open file: the kernel drops them when the process dies, even by
SIGKILL, so a stale lock file never blocks a restart (its PID line is just overwritten). The file
is never deleted by its holder (deleting it would let a third process lock a new file while a second
still waits on the old one). If it is deleted anyway (``rm -rf`` of the storage folder), ``check``
notices (inode compare) and locks a new file in its place.

Commands that only read the store or write their own files (``retrain``, ``export-feedback``)
take no lock: they run beside the daemon.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LOCK_NAME = "raccoon-watch.lock"
MAX_PID_BYTES = 32


class StorageLocked(RuntimeError):
    """Another process holds the store's lock; ``holder_pid`` is None when its file names none."""

    def __init__(self, lock_file: Path, holder_pid: int | None) -> None:
        who = f"PID {holder_pid}" if holder_pid is not None else "another process (its PID is not in the file)"
        super().__init__(f"{lock_file}: the store is in use by {who}; one daemon per storage.path")
        self.lock_file = lock_file
        self.holder_pid = holder_pid


def read_holder(lock_file: Path) -> int | None:
    """The PID written in a lock file, or None (missing, empty, not a number)."""
    try:
        text = lock_file.read_bytes()[:MAX_PID_BYTES].decode("ascii", errors="replace").strip()
        return int(text) if text.isdigit() and len(text) <= 10 else None  # Linux PIDs have at most 7 digits
    except OSError:
        return None


def is_locked(storage: Path) -> bool:
    """Does a live process hold ``storage``'s lock now? Creates nothing (for ``check-config``, which
    must not take the store from a daemon, nor leave a lock file in a folder that did not have one)."""
    try:
        fd = os.open(Path(storage) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return False


class StorageLock:
    """``acquire()`` at start-up, ``check()`` now and then, ``release()`` at stop."""

    def __init__(self, storage: Path) -> None:
        self.storage = Path(storage)
        self.lock_file = self.storage / LOCK_NAME
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we locked

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Lock the store. True: held. False: the folder cannot be made or written (the store will
        run in memory then: nothing on disk to share; logged). StorageLocked: another process has it."""
        try:
            self.storage.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            log.warning("storage_lock_unavailable", path=str(self.lock_file), reason=exc.strerror or str(exc))
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageLocked(self.lock_file, read_holder(self.lock_file)) from None
        except OSError as exc:  # a filesystem without flock (some network mounts)
            os.close(fd)
            log.warning("storage_lock_unavailable", path=str(self.lock_file), reason=exc.strerror or str(exc))
            return False
        self._fd = fd
        st = os.fstat(fd)
        self._ino = (st.st_dev, st.st_ino)
        self._write_pid(fd)
        return True

    @staticmethod
    def _write_pid(fd: int) -> None:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: the lock holds all the same, only the PID is not there to read
            log.warning("storage_lock_pid_not_written", reason=exc.strerror or str(exc))

    def check(self) -> None:
        """The lock file was deleted or replaced (the storage folder removed): lock a new one."""
        if self._fd is None:
            return
        try:
            st = os.stat(self.lock_file)
            if (st.st_dev, st.st_ino) == self._ino:
                return
        except OSError:
            pass
        old = self._fd
        self._fd = None
        try:
            taken = self.acquire()
        except StorageLocked as exc:
            log.error("storage_lock_lost", path=str(self.lock_file), holder_pid=exc.holder_pid,
                      consequence="another daemon locked the re-created store folder")
            taken = False
        if taken:
            log.warning("storage_lock_renewed", path=str(self.lock_file), reason="the lock file was deleted")
            os.close(old)
        else:
            self._fd = old  # keep what we had: the old lock still keeps out whoever opened the old file

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None
