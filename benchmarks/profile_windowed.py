"""Where the windowed engine's time goes, phase by phase, on the balanced E/I network.

Runs `simulate_windowed` on the network of `compare_brian2.py` (same generator, model and
delay), once to compile and once timed, then once under `jax.profiler` and adds up the time
of every compiled operation (exclusive of the loops around it) by the engine phase whose
`jax.named_scope` it was traced in:

- ``push``: the previous window's spikes through their synapse rows, scatter-added per
  target (closed-form end-of-window effects and the excitation bound);
- ``bound``: the superposed end state of every neuron, the spike bound, the candidates;
- ``pull``: each candidate's arrivals gathered through its by-target row and put in time
  order (`lax.top_k`);
- ``sequence``: the candidates' event sequences (segment loop, Newton root);
- ``write-back``: the candidates' new states and spikes scattered back;
- ``record``: the spike record (appends, final sort); ``other``: the rest.

Prints one JSON line per N: wall ms per window (timed run), ms per window per phase (from
the profile; the two threads of the CPU runtime can overlap, so the phases may add up to
more than the wall time) and the phases' shares.

    .venv/bin/python benchmarks/profile_windowed.py [--sizes 10000 100000] [--t-sim 0.2]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "src"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _timing import emit, machine  # noqa: E402
from compare_brian2 import DELAY, MODEL, K  # noqa: E402

import eventsnn as es  # noqa: E402
from eventsnn.event import windowed  # noqa: E402

# Innermost first: an operation belongs to the first of these scopes on its name stack.
PHASES = ("sequence", "pull", "candidates", "push", "bound", "record")
NAMES = {"candidates": "write-back"}


def op_scopes(hlo_text: str) -> dict[str, str]:
    """Instruction name -> phase, from the ``op_name`` metadata of the compiled HLO."""
    out = {}
    for m in re.finditer(r"%([\w.\-]+) = [^\n]*?op_name=\"([^\"]*)\"", hlo_text):
        parts = m.group(2).split("/")
        phase = next((p for p in PHASES if p in parts), "other")
        out[m.group(1)] = NAMES.get(phase, phase)
    return out


def exclusive_times(trace_file: Path) -> collections.Counter:
    """Microseconds per operation name, minus the time of the operations nested in it (a
    while loop's own time without its body's), over all threads."""
    events = json.load(gzip.open(trace_file))["traceEvents"]
    threads = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("args", {}).get("hlo_op"):
            threads[e["pid"], e["tid"]].append(e)
    own = collections.Counter()
    for evs in threads.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                own[stack[-1]["args"]["hlo_op"]] -= e["dur"]
            own[e["args"]["hlo_op"]] += e["dur"]
            stack.append(e)
    return own


def profile(n: int, t_sim: float) -> dict:
    sources, weights, v_leak = es.balanced_ei(n, seed=1, in_degree=K)
    syn = es.Synapses.from_in_degree(sources, weights, n, dtype=jnp.float32)
    net = es.SparseNetwork(syn, delay=DELAY, v_leak=v_leak, **MODEL)
    # The same settings for the runs and for the program whose instruction names are read.
    settings = dict(
        max_spikes=int(n * t_sim * 60),
        max_arrivals=32,
        spikes_per_window=None,
        push_chunk=None,
        candidate_chunk=None,
    )
    kw = dict(settings, check_overflow=False)
    jax.block_until_ready(es.simulate_windowed(net, t_sim, **kw).count)
    start = time.perf_counter()
    res = es.simulate_windowed(net, t_sim, **kw)
    jax.block_until_ready(res.count)
    wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(es.simulate_windowed(net, t_sim, **kw).count)
        own = exclusive_times(next(Path(tmp).rglob("perfetto_trace.json.gz")))
    budgets = windowed._budgets(net, t_sim, *settings.values())
    scopes = op_scopes(windowed._simulate.lower(net, budgets).compile().compiled.as_text())
    windows = round(t_sim / DELAY)
    per_phase = collections.Counter()
    for op, us in own.items():
        per_phase[scopes.get(op, "other")] += us
    total = sum(per_phase.values())
    return {
        "n": n,
        "t_sim_s": t_sim,
        "spikes": int(res.count),
        "wall_ms_per_window": 1e3 * wall / windows,
        "profiled_ms_per_window": {k: v / 1e3 / windows for k, v in per_phase.most_common()},
        "share": {k: v / total for k, v in per_phase.most_common()},
        "unmapped_ops": sorted(op for op in own if op not in scopes)[:10],
        **machine(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--t-sim", type=float, default=0.2, help="simulated seconds per size")
    args = ap.parse_args()
    for n in args.sizes:
        emit(profile(n, args.t_sim))


if __name__ == "__main__":
    main()
