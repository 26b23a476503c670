"""Probe overhead: `depthscope.train()` against the plain PyTorch loop a user would write.

The baseline is written here and shares nothing with depthscope: an `nn.Sequential` of Linear +
ReLU (or Sigmoid) layers with He init and zero biases, SGD, cross-entropy, `loss.item()` every
step, and the same held-out evaluation as depthscope's config (every EVAL_EVERY steps and at
the end), on data it makes itself of the same size and shape. depthscope's side is
`depthscope.train(config)`, timed end to end as a user calls it: data, model, probe and every
recorded statistic included. Both sides train the same network for the same steps and batch.

Runs are paired and interleaved (plain, depthscope, then depthscope, plain, ...) so a
neighbour's load hits both sides alike; the reported ratio is the median of the per-pair ratios
of the training thread's CPU time (one torch thread: forward, backward and the probe all run on
it; the wall clock on a shared machine also counts other processes' time), and beside it the
ratio of each side's fastest run (load only ever adds time). Cases per network:

    every step                    every statistic at every step, no histograms   (<= 1.3x)
    every step, histograms /10    ... and histograms every 10 steps              (<= 1.45x)
    every 10th step               record_every = 10: mostly unrecorded steps     (<= 1.05x)

Beside them, two references with the probe off, which tell the probe's cost from the rest of
depthscope's: DeepNet's forward pass against the same nn.Sequential's (DeepNet's must cost no
more), and depthscope's training loop with nothing recorded against the plain loop (a run no
user can ask for: the last step is always recorded). On the CPU the probe uses
its C kernels where they were built, as a user's run does; --tensor-ops measures its tensor-op
backend instead (DEPTHSCOPE_NATIVE=0). With --device cuda the ratio is of wall-clock time.

    python bench/overhead.py [--quick] [--only '10/64/128 relu'] [--device cpu|cuda]
        [--tensor-ops] [--out PATH]   (default: bench/results/overhead[-tensor-ops][-cuda].json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import depthscope
import torch
from depthscope.engine.config import ModelConfig
from depthscope.engine.model import build_model
from depthscope.engine.trainer import Trainer
from torch import Tensor, nn
from torch.nn import functional

NETWORKS = [(10, 64, 128), (20, 128, 256), (50, 64, 128), (100, 32, 64)]  # depth, width, batch
ACTIVATIONS = ["relu", "sigmoid"]
CASES = {  # name: (record_every, histogram_every, target)
    "every step": (1, 0, 1.3),
    "every step, histograms every 10": (1, 10, 1.45),
    "every 10th step": (10, 0, 1.05),
}
TENSOR_OPS_AIM = 1.6  # the tensor-op backend's aim, every case
EVAL_EVERY = 50
N_SAMPLES, INPUT_DIM, CLASSES, HELD_OUT, LR = 2048, 2, 2, 0.2, 0.05
RUN_SECONDS = 0.25  # a plain run's length: long enough that setup is a small part of it
PAIRS, QUICK_PAIRS = 15, 3
BASELINE = (
    "a plain nn.Sequential loop written in bench/overhead.py, sharing nothing with depthscope: "
    "Linear + ReLU/Sigmoid, He init, zero biases, SGD (lr 0.05), cross-entropy, loss.item() "
    f"each step, held-out loss and accuracy every {EVAL_EVERY} steps and at the end"
)


# -- the baseline ------------------------------------------------------------------------------
def sequential(depth: int, width: int, activation: str) -> nn.Sequential:
    """Linear + activation `depth` times, then a Linear readout; He-normal weights, zero biases."""
    layers: list[nn.Module] = []
    n_in = INPUT_DIM
    for _ in range(depth):
        layers += [nn.Linear(n_in, width), nn.ReLU() if activation == "relu" else nn.Sigmoid()]
        n_in = width
    layers.append(nn.Linear(width, CLASSES))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def plain_data(seed: int, device: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two noisy interleaved classes in the plane, standardized, split 80 / 20."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, INPUT_DIM, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()
    x = x + 0.1 * torch.randn(N_SAMPLES, INPUT_DIM, generator=g)
    n_test = int(N_SAMPLES * HELD_OUT)
    x = (x - x[n_test:].mean(0)) / x[n_test:].std(0)
    return (
        x[n_test:].to(device),
        y[n_test:].to(device),
        x[:n_test].to(device),
        y[:n_test].to(device),
    )


def plain_run(depth: int, width: int, batch: int, activation: str, steps: int, device: str) -> None:
    """The whole run as a user would write it: data, model, optimizer, the loop."""
    x_train, y_train, x_test, y_test = plain_data(0, device)
    torch.manual_seed(0)
    model = sequential(depth, width, activation).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    n = x_train.shape[0]

    def batches() -> Iterator[Tensor]:
        while True:
            order = torch.randperm(n)
            yield from (order[i : i + batch].to(device) for i in range(0, n - batch + 1, batch))

    draw = batches()
    for step in range(steps):
        idx = next(draw)
        optimizer.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.item()
        loss.backward()
        optimizer.step()
        if step % EVAL_EVERY == 0 or step == steps - 1:
            model.eval()
            with torch.no_grad():
                logits = model(x_test)
                functional.cross_entropy(logits, y_test).item()
                (logits.argmax(1) == y_test).float().mean().item()
            model.train()


# -- depthscope, as a user calls it ------------------------------------------------------------
def config(
    depth: int, width: int, batch: int, activation: str, case: str, steps: int, device: str
) -> Any:
    record_every, histogram_every, _ = CASES[case]
    return depthscope.RunConfig.model_validate(
        {
            "model": {
                "depth": depth,
                "width": width,
                "activation": activation,
                "init": "he_normal",
            },
            "training": {"batch_size": batch, "steps": steps, "lr": LR, "device": device},
            "data": {"n_samples": N_SAMPLES, "input_dim": INPUT_DIM},
            "recording": {
                "record_every": record_every,
                "histogram_every": histogram_every,
                "eval_every": EVAL_EVERY,
            },
        }
    )


def depthscope_run(cfg: Any) -> None:
    depthscope.train(cfg)


def unprobed_run(cfg: Any) -> None:
    """depthscope's loop with the probe left out: the trainer's unrecorded step at every step
    and the held-out evaluation on the plain loop's schedule (the trainer's own internals: no
    config asks for this)."""
    trainer = Trainer(cfg)
    steps = cfg.training.steps
    for step in range(steps):
        trainer._step(step, next(trainer._batches), False, False, False)
        if step % EVAL_EVERY == 0 or step == steps - 1:
            trainer.evaluate()


# -- timing ------------------------------------------------------------------------------------
def timed(run: Callable[[], None], device: str) -> float:
    """Seconds of the reported clock: this thread's CPU time, or the wall clock on a GPU."""
    if device == "cpu":
        start = time.thread_time()
        run()
        return time.thread_time() - start
    start = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def paired(
    plain: Callable[[], None], probed: Callable[[], None], pairs: int, device: str
) -> dict[str, Any]:
    plain(), probed()  # warm-up: first calls pay for lazy imports and allocations
    plain_times, probed_times = [], []
    for rep in range(pairs):
        if rep % 2 == 0:
            p, q = timed(plain, device), timed(probed, device)
        else:
            q, p = timed(probed, device), timed(plain, device)
        plain_times.append(p)
        probed_times.append(q)
    ratios = [q / p for p, q in zip(plain_times, probed_times, strict=True)]
    return {
        "plain_s_median": statistics.median(plain_times),
        "depthscope_s_median": statistics.median(probed_times),
        "ratio_median": statistics.median(ratios),
        "ratio_quartiles": [statistics.quantiles(ratios, n=4)[i] for i in (0, 2)]
        if len(ratios) > 1
        else [ratios[0], ratios[0]],
        "ratio_of_fastest": min(probed_times) / min(plain_times),
        "ratios": ratios,
    }


def run_steps(depth: int, width: int, batch: int, activation: str, device: str) -> int:
    """Steps for a plain run of about RUN_SECONDS, a whole number of EVAL_EVERY periods."""
    plain_run(depth, width, batch, activation, 5, device)  # the first run pays for imports
    started = timed(lambda: plain_run(depth, width, batch, activation, 20, device), device)
    per_step = (
        timed(lambda: plain_run(depth, width, batch, activation, 60, device), device) - started
    )
    steps = round(RUN_SECONDS / max(per_step / 40, 1e-6) / EVAL_EVERY) * EVAL_EVERY
    return max(EVAL_EVERY, steps)


def forward_ratio(depth: int, width: int, batch: int, activation: str, pairs: int) -> float:
    """DeepNet's forward pass (probe off: no taps, no norm, no residual) against the same
    nn.Sequential's, median of interleaved blocks of forwards (with autograd on, as training)."""
    model_config = ModelConfig.model_validate(
        {"depth": depth, "width": width, "activation": activation, "init": "he_normal"}
    )
    deepnet = build_model(model_config, INPUT_DIM, CLASSES, seed=0)
    plain = sequential(depth, width, activation)
    x = torch.randn(batch, INPUT_DIM)
    repeat = max(5, round(2000 / depth))

    def forwards(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            for _ in range(repeat):
                model(x)

        return run

    result = paired(forwards(plain), forwards(deepnet), 4 * pairs, "cpu")
    return float(result["ratio_median"])


def machine(device: str) -> dict[str, Any]:
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
    }


def measure(
    network: tuple[int, int, int], activation: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The network's row per case, and its reference row: depthscope's loop, nothing recorded."""
    depth, width, batch = network
    steps = run_steps(depth, width, batch, activation, args.device)
    rows = []
    for case, (record_every, histogram_every, target) in CASES.items():
        cfg = config(depth, width, batch, activation, case, steps, args.device)
        backend = Trainer(cfg).probe.backend_name
        result = paired(
            lambda: plain_run(depth, width, batch, activation, steps, args.device),
            lambda cfg=cfg: depthscope_run(cfg),
            args.pairs,
            args.device,
        )
        aim = TENSOR_OPS_AIM if backend == "tensor ops" else target
        row = {
            "network": f"{depth}/{width}/{batch}",
            "depth": depth,
            "width": width,
            "batch": batch,
            "activation": activation,
            "case": case,
            "record_every": record_every,
            "histogram_every": histogram_every,
            "eval_every": EVAL_EVERY,
            "steps_per_run": steps,
            "pairs": args.pairs,
            "probe_backend": backend,
            **result,
            "plain_ms_per_step": 1e3 * result["plain_s_median"] / steps,
            "depthscope_ms_per_step": 1e3 * result["depthscope_s_median"] / steps,
            "target": aim,
            "meets_target": result["ratio_median"] <= aim,
        }
        rows.append(row)
        print(
            f"{row['network']:<10} {activation:<7} {case:<32} [{backend}] "
            f"plain {row['plain_ms_per_step']:6.2f} ms/step  depthscope "
            f"{row['depthscope_ms_per_step']:6.2f}  ratio {row['ratio_median']:.3f}"
            f" [{row['ratio_quartiles'][0]:.2f}–{row['ratio_quartiles'][1]:.2f}]"
            f" fastest/fastest {row['ratio_of_fastest']:.3f}"
            f"{'' if row['meets_target'] else f'  (over {aim})'}",
            flush=True,
        )
    cfg = config(depth, width, batch, activation, "every step", steps, args.device)
    reference = paired(
        lambda: plain_run(depth, width, batch, activation, steps, args.device),
        lambda: unprobed_run(cfg),
        args.pairs,
        args.device,
    )
    print(
        f"{depth}/{width}/{batch} {activation}: depthscope's loop, nothing recorded / plain "
        f"{reference['ratio_median']:.3f}",
        flush=True,
    )
    unprobed = {
        "network": f"{depth}/{width}/{batch}",
        "activation": activation,
        "steps_per_run": steps,
        "pairs": args.pairs,
        **reference,
    }
    return rows, unprobed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PAIRS} pairs, not {PAIRS}")
    parser.add_argument("--only", default="", help="only networks like 10/64/128, and activation")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--tensor-ops", action="store_true", help="the tensor-op backend")
    parser.add_argument("--out", type=Path, help="default: bench/results/overhead[...].json")
    args = parser.parse_args()
    args.pairs = QUICK_PAIRS if args.quick else PAIRS
    if args.tensor_ops:
        os.environ["DEPTHSCOPE_NATIVE"] = "0"
    if args.out is None:
        suffix = ("-tensor-ops" if args.tensor_ops else "") + (
            "" if args.device == "cpu" else f"-{args.device}"
        )
        args.out = Path(__file__).parent / "results" / f"overhead{suffix}.json"
    torch.set_num_threads(1)  # one training thread on both sides
    info = machine(args.device)
    started = time.perf_counter()
    results, unprobed, forward = [], [], []
    for depth, width, batch in NETWORKS:
        for activation in ACTIVATIONS:
            name = f"{depth}/{width}/{batch} {activation}"
            if args.only and not all(part in name for part in args.only.split()):
                continue
            rows, reference = measure((depth, width, batch), activation, args)
            results += rows
            unprobed.append(reference)
            if args.device == "cpu":
                ratio = forward_ratio(depth, width, batch, activation, args.pairs)
                forward.append(
                    {
                        "network": f"{depth}/{width}/{batch}",
                        "activation": activation,
                        "deepnet_over_sequential": ratio,
                    }
                )
                print(f"{name}: DeepNet forward / nn.Sequential forward {ratio:.3f}", flush=True)
    info["load_average_at_end"] = list(os.getloadavg())
    worst = {
        case: max((r["ratio_median"] for r in results if r["case"] == case), default=None)
        for case in CASES
    }
    clock = "training-thread CPU" if args.device == "cpu" else "wall-clock"
    report = {
        "what": f"median per-pair ratio of {clock} time of a whole run: "
        "depthscope.train(config) / the plain baseline, same network, steps and batch",
        "baseline": BASELINE,
        "machine": info,
        "seconds": round(time.perf_counter() - started, 1),
        "worst_ratio": worst,
        "targets": {case: target for case, (_, _, target) in CASES.items()},
        "results": results,
        "without_probe": {
            "what": "depthscope's training loop with nothing recorded (every step unrecorded, "
            "held-out evaluation on the plain schedule) / the plain baseline: what depthscope "
            "costs apart from the probe",
            "results": unprobed,
        },
        "deepnet_forward": {
            "what": "DeepNet's forward / nn.Sequential's, probe off (no taps, norm or residual)",
            "results": forward,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['seconds']} s; worst ratios {worst}")


if __name__ == "__main__":
    main()
