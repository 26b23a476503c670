"""The probe's statistics on the CPU in C (native.c): compiled once per machine, called with ctypes.

On small networks the portable probe costs more in tensor ops and copies than in arithmetic
(docs/probe.md). These kernels read every layer's tensors where the forward and backward passes
left them and write each number straight into its slot of the step's flat buffer, a handful
of calls a step whatever the depth. They are used when training runs on the CPU and a C
compiler is there to build them; otherwise, on CUDA, or with DEPTHSCOPE_NATIVE=0, the probe
uses its portable tensor ops, which compute the same numbers.

The shared library is built from native.c with the system's C compiler ($CC, else cc) into
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
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from depthscope.layers import HealthRule
from depthscope.stats import WeightGroups
from depthscope.transfer import HEAD, Span, Transfer

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
# -ffp-contract=off: no fused multiply-adds, so each float op rounds as torch's does (the
# histograms' bin edges agree); -fopenmp-simd: vectorise the marked loops, no OpenMP runtime.
FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp-simd", "-ffp-contract=off", "-fno-math-errno")
HEALTH_KINDS = {"within": 1, "above": 2, "relu": 3, "prelu": 4, "gelu": 5, "silu": 6}

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_SIGNATURES: dict[str, list[type]] = {
    "ds_moments": [ctypes.c_int, _P, _I64, _P, _P, _P],
    "ds_norms": [ctypes.c_int, _P, _P, _P, _P, _P],
    "ds_difference_norms": [ctypes.c_int, _P, _P, _P, _P, _P],
    "ds_health": [ctypes.c_int, _P, _I64, _I64, ctypes.c_int, ctypes.c_float, _P, _P, _P, _P, _P],
    "ds_readout": [_P, _I64, _I64, _P, _P, _P, _P],
    "ds_histograms": [ctypes.c_int, _P, _P, ctypes.c_int, _P, _P, _P, _P],
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
    """Compile native.c unless this version is already built; returns the library's path.
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
    """Whether the kernels can compute a model's statistics: float32 on the CPU."""
    return all(p.device.type == "cpu" and p.dtype == torch.float32 for p in parameters)


# -- per step ----------------------------------------------------------------------------------
def indices(values: Sequence[int]) -> ctypes.Array[ctypes.c_int64]:
    return (_I64 * len(values))(*values)


def addresses(tensors: Sequence[Tensor]) -> ctypes.Array[ctypes.c_void_p]:
    """The tensors' data addresses, for kernels that read them as flat float arrays."""
    return (_P * len(tensors))(
        *[(t if t.is_contiguous() else t.contiguous()).data_ptr() for t in tensors]
    )


class NativeStep:
    """One Layout's calls into the kernels. Where every number goes (index arrays into the flat
    buffer `out`) is worked out once, here; a step only gathers its tensors' addresses.

    `host` is a ctypes view of `out`: the host writes the loss and `clipped` into it and reads
    the whole buffer back as a list, with no tensor op."""

    def __init__(
        self,
        lib: ctypes.CDLL,
        transfer: Transfer,
        weights: Sequence[Tensor],
        rule: HealthRule | None,
        batch: int,
    ) -> None:
        t, lay = transfer, transfer.layout
        assert not lay.g_rows, "the kernels keep dL/dh apart from the hidden rows"
        self.lib, self.transfer = lib, t
        layers, count = lay.layers, len(weights)
        self.batch, self.width, self.n = batch, lay.width, lay.n
        self.out = torch.zeros(t.size, dtype=torch.float32)
        self.address = self.out.data_ptr()
        self.host = (ctypes.c_float * t.size).from_address(self.address)
        rows = range(layers)
        self.z_where = (
            indices([t.sums.start + i for i in rows]),
            indices([t.norms.start + i for i in rows]),
        )
        self.h_where = (
            indices([t.sums.start + layers + i for i in rows]),
            indices([t.norms.start + layers + i for i in rows]),
        )
        self.g_where = [t.g_norms.start + i for i in rows]
        self.g_norms = indices(self.g_where)
        self.g_lengths = indices([self.n] * layers)
        self.healthy = indices([t.sums.start + t.mask_row + i for i in rows])
        self.live = indices([t.live.start + i for i in rows]) if lay.active else None
        self.rule = (HEALTH_KINDS[rule.kind], rule.param) if rule is not None else None
        self.per_unit = torch.zeros(lay.width, dtype=torch.int32)
        self.head = t.head.start
        self.readout = indices([self.head + i for i in (1, 3, 4, 5)])  # accuracy … dL/dlogits
        position = _weight_positions(t.weights, transfer.weight_groups)
        self.grad_where, self.before_where, self.update_where = (
            indices(position[r]) for r in range(3)
        )
        self.weight_lengths = indices([w.numel() for w in weights])
        self.saved = [torch.empty_like(w, device="cpu") for w in weights]  # values before
        self.saved_addresses = addresses(self.saved)
        self.histograms = [_HistogramSlots(span, t.bins) for span in t.hist_hidden]
        self.readout_histograms = (
            _HistogramSlots(t.hist_readout, t.bins) if lay.histograms else None
        )
        self._count = count

    def before_update(
        self, grads: Sequence[Tensor], weights: Sequence[Tensor], others: Sequence[Tensor]
    ) -> None:
        """Norms of the weights' gradients (before clipping) and of their values, which are
        copied for the update's norm; the other parameters' gradients: one norm together."""
        lib, out, n = self.lib, self.address, self.weight_lengths
        lib.ds_norms(self._count, addresses(grads), n, None, out, self.grad_where)
        lib.ds_norms(
            self._count, addresses(weights), n, self.saved_addresses, out, self.before_where
        )
        if others:
            lengths = indices([p.numel() for p in others])
            lib.ds_norms(
                len(others), addresses(others), lengths, None, out + 4 * (self.head + HEAD), None
            )

    def gradient(self, layer: int, grad: Tensor) -> None:
        """dL/dh of one layer as backpropagation produces it (the hook path for large layers):
        its norm, and its histogram on histogram steps."""
        one = addresses([grad])
        self.lib.ds_norms(
            1, one, indices([self.n]), None, self.address, indices([self.g_where[layer]])
        )
        if self.histograms:
            self.histograms[-1].fill(self.lib, one, self.address, self.n, only=layer)

    def finish(
        self,
        z: Sequence[Tensor],
        h: Sequence[Tensor] | None,
        u: Sequence[Tensor],
        grads: Sequence[Tensor] | None,
        logits: Tensor,
        dlogits: Tensor,
        targets: Tensor | None,
        weights: Sequence[Tensor],
        slopes: Sequence[Tensor] | None,
    ) -> None:
        """Everything else, after the update: moments of z and h (None: h is z), the health
        counts over the activation inputs u (read once more only when u is neither z nor h),
        the norms (and histograms) of dL/dh unless the hooks took them (grads None), the
        readout's numbers (accuracy without targets: NaN), the weights' update norms and the
        histograms of h."""
        lib, out, layers = self.lib, self.address, len(z)
        z_at = addresses(z)
        lib.ds_moments(layers, z_at, self.n, out, *self.z_where)
        h_at = z_at if h is None else addresses(h)
        if h is not None:
            lib.ds_moments(layers, h_at, self.n, out, *self.h_where)
        if self.rule is not None:
            u_at = z_at if u is z else h_at if u is h else addresses(u)
            kind, param = self.rule
            slopes_at = None if slopes is None else addresses(slopes)
            lib.ds_health(
                layers,
                u_at,
                self.batch,
                self.width,
                kind,
                param,
                slopes_at,
                self.per_unit.data_ptr(),
                out,
                self.healthy,
                self.live,
            )
        g_at = None
        if grads is not None:
            g_at = addresses(grads)
            lib.ds_norms(layers, g_at, self.g_lengths, None, out, self.g_norms)
        classes = logits.shape[1] if logits.dim() > 1 else 1
        lib.ds_readout(
            logits.data_ptr(),
            logits.shape[0],
            classes,
            None if targets is None else targets.data_ptr(),
            dlogits.data_ptr(),
            out,
            self.readout,
        )
        lib.ds_difference_norms(
            self._count,
            addresses(weights),
            self.saved_addresses,
            self.weight_lengths,
            out,
            self.update_where,
        )
        if self.histograms:
            self.histograms[0].fill(lib, h_at, out, self.n)
            if g_at is not None:
                self.histograms[1].fill(lib, g_at, out, self.n)
        if self.readout_histograms is not None:
            self.readout_histograms.fill(lib, addresses([logits, dlogits]), out, logits.numel())

    def read(self, loss: float, clipped: float) -> list[float]:
        """The whole buffer as host floats, with the loss and `clipped` written in first."""
        host = self.host
        host[self.head] = loss
        host[self.head + 2] = clipped
        return host[:]


class _HistogramSlots:
    """Where the histograms of one block of rows go: lo, hi and counts per row (see
    stats.RowHistograms for the block's format)."""

    def __init__(self, span: Span, bins: int) -> None:
        rows = (span.stop - span.start) // (2 + bins)
        self.rows, self.bins = rows, bins
        self.lo = [span.start + r for r in range(rows)]
        self.hi = [span.start + rows + r for r in range(rows)]
        self.counts = [span.start + 2 * rows + r * bins for r in range(rows)]
        self.where = (indices(self.lo), indices(self.hi), indices(self.counts))

    def fill(
        self,
        lib: ctypes.CDLL,
        rows: ctypes.Array[ctypes.c_void_p],
        out: int,
        n: int,
        only: int | None = None,
    ) -> None:
        if only is None:
            lib.ds_histograms(
                len(rows), rows, indices([n] * len(rows)), self.bins, out, *self.where
            )
        else:
            lib.ds_histograms(
                1,
                rows,
                indices([n]),
                self.bins,
                out,
                indices([self.lo[only]]),
                indices([self.hi[only]]),
                indices([self.counts[only]]),
            )


def _weight_positions(span: Span, groups: WeightGroups) -> list[list[int]]:
    """Per row (gradient, value before, update), each weight's slot in the flat buffer."""
    count = len(groups.weights)
    return [
        [span.start + groups.host_order[row * count + i] for i in range(count)] for row in range(3)
    ]


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
    sys.stdout.flush()

