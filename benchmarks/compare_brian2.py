"""eventsnn's windowed engine against Brian2 2.11 on the balanced E/I network (BENCHMARKS.md 3).

Both sides simulate the same network (one generator, `eventsnn.balanced_ei`, handed to
Brian2 as arrays) for 1 s: N neurons, fixed in-degree 100, 1 ms delay. eventsnn runs in
float32; Brian2 runs in C++ standalone mode (dt 0.1 ms, method exact) twice, in float32
(``prefs.core.default_float_dtype``, the fair comparison) and in float64 (its default), per
N and dtype the faster of no OpenMP and OpenMP with one thread per core (``--threads``; 0:
no OpenMP only). Each side runs in its own subprocess, alternating per N, and times its
run `--repeats` times (default 3), keeping the best: eventsnn after a first, compiling
call; Brian2 by running its built binary again. Peak memory: eventsnn's process (JAX
included); Brian2's standalone binary (the child that simulates, measured by a wrapper
around it, ``run_cmd_unix``), not the Python process that builds it. Prints one JSON line
per side, dtype and N, then a summary with ``events_per_s_<N>_ratio`` (eventsnn / Brian2
float32), ``events_per_s_<N>_ratio_f64`` (eventsnn / Brian2 float64) and
``rate_rel_diff_<N>`` (against Brian2 float32).

    .venv/bin/python benchmarks/compare_brian2.py --brian2-python /tmp/brian2-venv/bin/python \
        [--sizes 1000 10000 100000] [--repeats 3] [--plot benchmarks/brian2.png]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
T_SIM, DELAY, K = 1.0, 1e-3, 100
MODEL = dict(tau_mem=20e-3, tau_syn=5e-3, v_th=1.0, v_reset=0.0, t_refrac=2e-3)
DTYPES = ("float32", "float64")

# Runs Brian2's binary as its only child and appends the child's peak RSS (KiB) to a file.
PEAK_WRAPPER = """import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "a") as f:
    f.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.exit(rc)
"""


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side_eventsnn(npz: Path, out: Path, repeats: int) -> dict:
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    import jax
    import jax.numpy as jnp

    import eventsnn as es

    data = np.load(npz)
    n = data["v_leak"].size
    syn = es.Synapses.from_in_degree(data["sources"], data["weights"], n, dtype=jnp.float32)
    net = es.SparseNetwork(syn, delay=DELAY, v_leak=data["v_leak"], **MODEL)
    kw = dict(max_spikes=int(n * T_SIM * 60), check_overflow=False)
    start = time.perf_counter()
    res = es.simulate_windowed(net, T_SIM, **kw)
    jax.block_until_ready(res.count)
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        res = es.simulate_windowed(net, T_SIM, **kw)
        jax.block_until_ready(res.count)
        runs.append(time.perf_counter() - start)
    res.raise_if_overflow()
    counts = np.asarray(res.spike_counts)
    np.save(out, counts)
    run = min(runs)
    return {
        "run_s": run,
        "runs_s": runs,
        "compile_s": max(first - run, 0.0),
        "spikes": int(res.count),
        "float": "float32",
        "peak_rss_mib": peak_mib(),
    }


def side_brian2(npz: Path, out: Path, threads: int, dtype: str, repeats: int) -> dict:
    import brian2 as b2

    data = np.load(npz)
    n = data["v_leak"].size
    build_dir = tempfile.mkdtemp(prefix="brian2-")
    b2.set_device("cpp_standalone", directory=build_dir, build_on_run=False)
    b2.prefs.devices.cpp_standalone.openmp_threads = threads
    b2.prefs.core.default_float_dtype = {"float32": b2.float32, "float64": b2.float64}[dtype]
    wrapper, peaks = Path(build_dir) / "peak_wrapper.py", Path(build_dir) / "peaks.txt"
    wrapper.write_text(PEAK_WRAPPER)
    b2.prefs.devices.cpp_standalone.run_cmd_unix = [sys.executable, str(wrapper), str(peaks)]
    b2.prefs.devices.cpp_standalone.run_cmd_unix += ["./main"]
    b2.defaultclock.dt = 0.1 * b2.ms
    eqs = """
    dv/dt = (-(v - v_leak) + I) / tau_mem : 1 (unless refractory)
    dI/dt = -I / tau_syn : 1
    v_leak : 1 (constant)
    """
    tau_mem, tau_syn = MODEL["tau_mem"] * b2.second, MODEL["tau_syn"] * b2.second  # noqa: F841
    group = b2.NeuronGroup(
        n, eqs, threshold="v > 1", reset="v = 0", refractory=2 * b2.ms, method="exact"
    )
    group.v_leak = data["v_leak"]
    group.v = data["v_leak"]
    synapses = b2.Synapses(group, group, "w : 1 (constant)", on_pre="I += w", delay=1 * b2.ms)
    post = np.repeat(np.arange(n), K)
    pre = data["sources"].ravel()
    order = np.argsort(pre, kind="stable")  # Brian2's own connect() order: by presynaptic
    synapses.connect(i=pre[order], j=post[order])
    synapses.w = data["weights"].ravel()[order]
    monitor = b2.SpikeMonitor(group)
    b2.run(T_SIM * b2.second)
    start = time.perf_counter()
    b2.device.build(directory=build_dir, compile=True, run=False)
    build = time.perf_counter() - start
    runs, walls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        b2.device.run(directory=build_dir, with_output=False)
        walls.append(time.perf_counter() - start)
        runs.append(float(b2.device._last_run_time))
    counts = np.bincount(np.asarray(monitor.i), minlength=n)
    np.save(out, counts)
    v_dtype = np.dtype(group.variables["v"].dtype).name
    if v_dtype != dtype:
        raise RuntimeError(f"Brian2 ran with v in {v_dtype}, not {dtype}.")
    binary_kib = [int(line) for line in peaks.read_text().split()]
    return {
        "run_s": min(runs),
        "runs_s": runs,
        "run_wall_s": min(walls),  # the binary's start and its wrapper's included
        "compile_s": build,
        "spikes": int(counts.sum()),
        "threads": threads,
        "float": dtype,
        "peak_rss_mib": max(binary_kib) / 1024,  # the standalone binary
        "python_peak_rss_mib": peak_mib(),  # the Python process that built it
    }


def record(side: str, n: int, result: dict) -> dict:
    spikes = result["spikes"]
    return {
        "side": side,
        "n": n,
        **result,
        "mean_rate_hz": spikes / n / T_SIM,
        "synaptic_events_per_s": spikes * K / result["run_s"],
    }


def run_side(python: str, args: list[str]) -> dict:
    proc = subprocess.run(
        [python, str(HERE), *args], capture_output=True, text=True, env=dict(os.environ)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"side {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(records: list[dict], counts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    lines = (
        ("eventsnn", "float32", "o-"),
        ("brian2", "float32", "s--"),
        ("brian2", "float64", "^:"),
    )
    for side, dtype, style in lines:
        rs = [r for r in records if r["side"] == side and r["float"] == dtype]
        rs = sorted(rs, key=lambda r: r["n"])
        ns, label = [r["n"] for r in rs], f"{side} {dtype}"
        axes[0].loglog(ns, [r["run_s"] for r in rs], style, label=label)
        axes[1].loglog(ns, [r["synaptic_events_per_s"] for r in rs], style, label=label)
    axes[0].set(xlabel="neurons N", ylabel="wall time of 1 s simulated (s)")
    axes[1].set(xlabel="neurons N", ylabel="synaptic events / s")
    largest = max(n for n, _ in counts)
    bins = np.linspace(0, 80, 41)
    for side in ("eventsnn", "brian2 float32"):
        axes[2].hist(counts[(largest, side)] / T_SIM, bins, histtype="step", label=side)
    axes[2].set(xlabel=f"firing rate (Hz), N = {largest}", ylabel="neurons")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brian2-python", help="interpreter of a venv with brian2==2.11.0")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="OpenMP threads of Brian2's second try (0: none; OpenMP spins on busy cores)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (best counts)")
    p.add_argument("--plot", type=Path, default=None, help="PNG: time and events/s vs N, rates")
    p.add_argument("--side", choices=("eventsnn", "brian2"), help=argparse.SUPPRESS)
    p.add_argument("--npz", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--side-threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--side-float", choices=DTYPES, default="float32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.side == "eventsnn":
        res = side_eventsnn(args.npz, args.out, args.repeats)
        print(json.dumps(record("eventsnn", np.load(args.npz)["v_leak"].size, res)))
        return
    if args.side == "brian2":
        res = side_brian2(args.npz, args.out, args.side_threads, args.side_float, args.repeats)
        print(json.dumps(record("brian2", np.load(args.npz)["v_leak"].size, res)))
        return
    if not args.brian2_python:
        p.error("--brian2-python PATH is required (a venv with brian2==2.11.0, Python >= 3.13)")
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    from eventsnn.sparse import balanced_ei

    records, counts = [], {}
    summary = {"benchmark": "compare_brian2", "t_sim_s": T_SIM, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        for k, n in enumerate(args.sizes):
            npz = Path(tmp) / f"net{n}.npz"
            sources, weights, v_leak = balanced_ei(n, seed=1, in_degree=K)
            np.savez(npz, sources=sources, weights=weights, v_leak=v_leak)
            sides = ["brian2", "eventsnn"] if k % 2 == 0 else ["eventsnn", "brian2"]
            best = {}
            for side in sides:
                common = ["--side", side, "--npz", str(npz), "--repeats", str(args.repeats)]
                if side == "eventsnn":
                    out = Path(tmp) / f"{side}{n}.npy"
                    r = run_side(sys.executable, [*common, "--out", str(out)])
                    rows = [(side, r, out)]
                else:
                    rows = []
                    for dtype in DTYPES:
                        out = Path(tmp) / f"{side}{dtype}{n}.npy"
                        tries = [
                            run_side(
                                args.brian2_python,
                                [*common, "--out", str(out), "--side-float", dtype]
                                + ["--side-threads", str(t)],
                            )
                            for t in sorted({0, args.threads})
                        ]
                        r = min(tries, key=lambda x: x["run_s"])
                        r["other_threads_run_s"] = max(x["run_s"] for x in tries)
                        rows.append((f"{side} {dtype}", r, out))
                for name, r, out in rows:
                    print(json.dumps(r), flush=True)
                    records.append(r)
                    counts[(n, name)] = np.load(out)
                    best[name] = r
            e, b = best["eventsnn"], best["brian2 float32"]
            b64 = best["brian2 float64"]
            summary[f"events_per_s_{n}_ratio"] = (
                e["synaptic_events_per_s"] / b["synaptic_events_per_s"]
            )
            summary[f"events_per_s_{n}_ratio_f64"] = (
                e["synaptic_events_per_s"] / b64["synaptic_events_per_s"]
            )
            summary[f"rate_rel_diff_{n}"] = (e["mean_rate_hz"] - b["mean_rate_hz"]) / b[
                "mean_rate_hz"
            ]
            for name, r in (("eventsnn", e), ("brian2_f32", b), ("brian2_f64", b64)):
                summary[f"{name}_run_s_{n}"] = r["run_s"]
                summary[f"{name}_peak_rss_mib_{n}"] = r["peak_rss_mib"]
        if args.plot:
            plot(records, counts, args.plot)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
