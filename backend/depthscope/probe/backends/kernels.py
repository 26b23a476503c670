"""Finding the probe's C kernels: the extension module `_kernels`, built at install time.

`pip install .` (and `pip install -e .`, which `make` runs) compiles kernels.c and module.c with
the system's C compiler into `depthscope.probe.backends._kernels` (setup.py; optional: without a
compiler the install goes on without it). Nothing is compiled or looked up at run time: `load()`
imports that module on first use, once per process, and checks the tables it shares with Python
(the hidden layers' columns, the readout's slots, the health rules' kinds, TINY, and, where the
sources sit beside it, that they are the ones it was built from). A mismatch raises
KernelMismatchError: numbers from kernels that disagree with the host's reading of them would
be wrong, not slow. Without the module, or with DEPTHSCOPE_NATIVE=0, the probe uses tensor ops,
which compute the same numbers. `python -m depthscope.probe.backends.kernels` says which.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from depthscope.engine.activations import RULE_KINDS
from depthscope.probe.metrics import (
    DH_NORM,
    H_SPREAD,
    H_SUM,
    TINY,
    U_HEALTHY,
    U_LIVE,
    U_SPREAD,
    U_SUM,
    Z_SPREAD,
    Z_SUM,
    Reduction,
)

log = logging.getLogger(__name__)

MODULE = "depthscope.probe.backends._kernels"
HERE = Path(__file__).parent
SOURCES = ("kernels.c", "module.c", "kernels.h")  # setup.py hashes them in this order
# The hidden kernel's `where` columns and the readout kernel's slots, as kernels.h orders them.
HIDDEN_COLUMNS: tuple[Reduction, ...] = (
    Z_SUM,
    Z_SPREAD,
    H_SUM,
    H_SPREAD,
    U_HEALTHY,
    U_LIVE,
    DH_NORM,
    U_SUM,
    U_SPREAD,
)
READOUT_SLOTS: tuple[str | Reduction, ...] = ("accuracy", Z_SUM, Z_SPREAD, DH_NORM)


class KernelMismatchError(RuntimeError):
    """The built kernels disagree with this Python code: rebuild them (`pip install -e .`)."""


def enabled() -> bool:
    """Whether the kernels may be used at all (DEPTHSCOPE_NATIVE=0 turns them off)."""
    return os.environ.get("DEPTHSCOPE_NATIVE", "1") != "0"


def check(module: ModuleType) -> None:
    """Raise KernelMismatchError unless the module's exported tables are the ones this code
    writes and reads through."""
    expected: dict[str, object] = {
        "COLUMNS": tuple(str(r) for r in HIDDEN_COLUMNS),
        "READOUT": tuple(str(r) for r in READOUT_SLOTS),
        "HEALTH_KINDS": {"none", *RULE_KINDS},
        "TINY": struct.unpack("f", struct.pack("f", TINY))[0],  # C's is a float
    }
    found: dict[str, object] = {
        "COLUMNS": getattr(module, "COLUMNS", None),
        "READOUT": getattr(module, "READOUT", None),
        "HEALTH_KINDS": set(getattr(module, "HEALTH_KINDS", {})),
        "TINY": getattr(module, "TINY", None),
    }
    wrong = [
        f"{k}: built {found[k]!r}, expected {v!r}" for k, v in expected.items() if found[k] != v
    ]
    built, current = getattr(module, "SOURCE_SHA", ""), source_sha()
    if built and current is not None and built != current:
        wrong.append("kernels.c, module.c or kernels.h changed since the module was built")
    if wrong:
        raise KernelMismatchError(
            f"the C kernels at {getattr(module, '__file__', MODULE)} do not match this code ("
            + "; ".join(wrong)
            + "): rebuild them with `pip install -e .` (or `make`), or set DEPTHSCOPE_NATIVE=0"
        )


def source_sha() -> str | None:
    """The SHA-256 of the kernels' sources beside this file, as setup.py computes it; None
    where they are not shipped (an installed wheel)."""
    paths = [HERE / name for name in SOURCES]
    if not all(p.exists() for p in paths):
        return None
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


@functools.cache
def _import() -> ModuleType | None:
    try:
        module = importlib.import_module(MODULE)
    except ImportError as error:
        log.warning("the probe's C kernels were not built (%s): it uses tensor ops", error)
        return None
    check(module)
    return module


def load() -> ModuleType | None:
    """The checked kernels module, imported on first call; None when turned off or not built."""
    return _import() if enabled() else None


def usable_for(parameters: Sequence[Tensor]) -> bool:
    """Whether the kernels can compute a model's statistics: float32 on the CPU, contiguous
    (they read the weights where they lie, by address)."""
    return all(
        p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
        for p in parameters
    )


def main() -> None:
    """Say which backend the probe takes on the CPU, and why."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not enabled():
        print("DEPTHSCOPE_NATIVE=0: the probe uses tensor ops")
        return
    module = load()
    if module is None:
        print("no C kernels (see above): the probe uses tensor ops")
        return
    print(f"C statistics kernels: {module.__file__}")


if __name__ == "__main__":
    main()
