"""Who owns a data directory: one server at a time, by an exclusive lock on a file in it.

The lock is `flock` on `<data dir>/server.lock`, held for the server's lifetime on a
descriptor no child inherits. The kernel drops it when the process dies however it dies
(even while it lingers as an unreaped zombie), so a restarted server gets it at once, and a
second server on the same directory is refused instead of sharing its runs.
"""

from __future__ import annotations

import fcntl
import os
import weakref
from pathlib import Path

LOCK_NAME = "server.lock"


class DataDirBusyError(Exception):
    def __init__(self, data_dir: Path, holder: str) -> None:
        who = f" (pid {holder})" if holder else ""
        super().__init__(
            f"another depthscope server{who} is using the data directory {data_dir}; stop it, "
            "or give this one another --data-dir"
        )


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock, or raise DataDirBusyError naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirBusyError(self.path.parent, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)  # an app dropped unclosed
        return self

    def release(self) -> None:
        if self._fd is not None:
            self._finalizer.detach()
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
