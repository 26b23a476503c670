"""One server per data directory: the lock, its holder's pid, and its release on death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from depthscope.service.app import create_app
from depthscope.service.ownership import DataDirBusyError, DataDirLock
from depthscope.service.settings import Settings


def test_second_server_on_a_data_dir_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = create_app(Settings(data_dir=tmp_path))
    epoch = first.state.store.epoch
    with pytest.raises(DataDirBusyError, match=f"pid {os.getpid()}.*{tmp_path}"):
        create_app(Settings(data_dir=tmp_path))
    assert first.state.store.epoch == epoch  # the refused one claimed nothing
    first.state.manager.shutdown()
    first.state.lock.release()
    second = create_app(Settings(data_dir=tmp_path))
    assert second.state.store.epoch == epoch + 1
    second.state.lock.release()


def test_lock_is_free_once_its_holder_is_killed_even_unreaped(tmp_path: Path) -> None:
    """A server killed with SIGKILL and not yet reaped (a zombie, whose pid still answers
    os.kill(pid, 0)) holds no lock: the kernel closed its descriptors when it died."""
    code = (
        "import sys, time; from pathlib import Path; "
        "from depthscope.service.ownership import DataDirLock; "
        "lock = DataDirLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusyError, match=f"pid {holder.pid}"):
            DataDirLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        time.sleep(0.3)
        os.kill(holder.pid, 0)  # still there, as a zombie: a pid probe would say "alive"
        lock = DataDirLock(tmp_path).acquire()
        assert lock.held
        lock.release()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
