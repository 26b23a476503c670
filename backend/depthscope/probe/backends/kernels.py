"""The probe's statistics on the CPU in C (kernels.c): compiled once per machine, called by ctypes.

On small networks the portable probe costs more in tensor ops and copies than in arithmetic
(docs/probe.md). These kernels read every layer's tensors where the forward and backward passes
left them and write each number straight into its slot of the step's flat buffer, a handful
of calls a step whatever the depth. They are used when training runs on the CPU and a C
compiler is there to build them; otherwise, on CUDA, or with DEPTHSCOPE_NATIVE=0, the probe
uses its portable tensor ops, which compute the same numbers.

The shared library is built from kernels.c with the system's C compiler ($CC, else cc) into
a cache directory ($DEPTHSCOPE_CACHE_DIR, else $XDG_CACHE_HOME/depthscope, else
~/.cache/depthscope), named by a hash of the source and flags, so an edit rebuilds it and
concurrent processes never load a half-written file. `main()` builds it ahead of time and
says which path the probe will take (`make` runs it after installing).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
# -ffp-contract=off: no fused multiply-adds, so each float op rounds as torch's does (the
# histograms' bin edges agree); -fopenmp-simd: vectorise the marked loops, no OpenMP runtime.
FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp-simd", "-ffp-contract=off", "-fno-math-errno")
HEALTH_KINDS = {"within": 1, "above": 2, "relu": 3, "prelu": 4, "gelu": 5, "silu": 6}
# ds_hidden's `where` table: per layer, the slot of each of these numbers (-1: not wanted)
HIDDEN_COLUMNS = ("z_sum", "z_norm", "h_sum", "h_norm", "healthy", "live", "g_norm")

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT, _FLOAT = ctypes.c_int, ctypes.c_float
_SIGNATURES: dict[str, list[Any]] = {  # argument types, as kernels.c declares them
    "ds_hidden": [_INT, _I64, _I64, _P, _P, _P, _P, _INT, _FLOAT, _P, _P, _P, _P],
    "ds_norms": [_INT, _P, _P, _P, _P, _P],
    "ds_difference_norms": [_INT, _P, _P, _P, _P, _P],
    "ds_readout": [_P, _I64, _I64, _P, _P, _P, _P],
    "ds_histograms": [_INT, _P, _P, _INT, _P, _P, _P, _P],
}


def enabled() -> bool:
    """Whether the kernels may be used at all (DEPTHSCOPE_NATIVE=0 turns them off)."""
    return os.environ.get("DEPTHSCOPE_NATIVE", "1") != "0"


def cache_dir() -> Path:
    if explicit := os.environ.get("DEPTHSCOPE_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "depthscope"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def library_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return cache_dir() / f"depthscope-native-{digest}.so"


def build() -> Path:
    """Compile kernels.c unless this version is already built; returns the library's path.
    Raises RuntimeError (with the compiler's message) when it cannot."""
    target = library_path()
    if target.exists():
        return target
    cc = compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler ({os.environ.get('CC', 'cc')}) on the PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.partial")
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *FLAGS, "-o", partial, str(SOURCE), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-2000:]}")
        # mkstemp made it private; other users (a container's unprivileged one) load it too
        os.chmod(partial, 0o755)
        os.replace(partial, target)  # atomic: another process sees all of it or nothing
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


@functools.cache
def _load() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(build()))
        for name, argtypes in _SIGNATURES.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = None
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        log.warning("C statistics kernels unavailable, the probe uses tensor ops: %s", error)
        return None
    return lib


def kernels() -> ctypes.CDLL | None:
    """The loaded kernels, built on first use; None when turned off or impossible here."""
    return _load() if enabled() else None


def usable_for(parameters: Sequence[Tensor]) -> bool:
    """Whether the kernels can compute a model's statistics: float32 on the CPU, contiguous
    (they read the weights where they lie, by address)."""
    return all(
        p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
        for p in parameters
    )


# -- arguments ---------------------------------------------------------------------------------
def indices(values: Sequence[int]) -> ctypes.Array[ctypes.c_int64]:
    """Positions in a step's flat buffer, as the kernels' `where` arguments take them."""
    return (_I64 * len(values))(*values)


def addresses(tensors: Sequence[Tensor]) -> ctypes.Array[ctypes.c_void_p]:
    """The tensors' data addresses, for kernels that read them as flat float arrays. A tensor
    that is not contiguous is copied first; the array keeps what it points into alive."""
    found = [t.data_ptr() for t in tensors if t.is_contiguous()]
    if len(found) == len(tensors):  # the usual case: the caller holds the tensors
        return (_P * len(found))(*found)
    flat = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    array = (_P * len(flat))(*[t.data_ptr() for t in flat])
    setattr(array, "tensors", flat)  # noqa: B010 (ctypes arrays take attributes)
    return array


def main() -> None:
    """Build the kernels now and say which statistics path the probe takes on the CPU."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not enabled():
        print("DEPTHSCOPE_NATIVE=0: the probe uses tensor ops")
        return
    if kernels() is None:
        print("no C kernels (see the warning above): the probe uses tensor ops")
        return
    print(f"C statistics kernels ready: {library_path()}")
