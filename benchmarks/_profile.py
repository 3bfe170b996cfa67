"""Time per `jax.named_scope` of a compiled function, from a `jax.profiler` trace.

Every compiled operation's time (exclusive of the loops around it) is added to the phase
whose scope it was traced in: the innermost of `phases` on its name stack, else "other".
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax


def op_scopes(hlo_text: str, phases) -> dict[str, str]:
    """Instruction name -> phase, from the ``op_name`` metadata of the compiled HLO."""
    out = {}
    for m in re.finditer(r"%([\w.\-]+) = [^\n]*?op_name=\"([^\"]*)\"", hlo_text):
        parts = m.group(2).split("/")
        out[m.group(1)] = next((p for p in phases if any(p in part for part in parts)), "other")
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


def phase_times(jitted, args, phases) -> collections.Counter:
    """Microseconds per phase of one call of ``jitted(*args)`` (already compiled)."""
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(jitted(*args))
        own = exclusive_times(next(Path(tmp).rglob("perfetto_trace.json.gz")))
    scopes = op_scopes(jitted.lower(*args).compile().as_text(), phases)
    per_phase = collections.Counter()
    for op, us in own.items():
        per_phase[scopes.get(op, "other")] += us
    return per_phase


def top_ops(jitted, args, phases, phase="other", k=15):
    """The `k` most expensive operations of one phase: ``[(us, op, scope path)]``."""
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(jitted(*args))
        own = exclusive_times(next(Path(tmp).rglob("perfetto_trace.json.gz")))
    text = jitted.lower(*args).compile().as_text()
    scopes = op_scopes(text, phases)
    names = {
        m.group(1): m.group(2)
        for m in re.finditer(r"%([\w.\-]+) = [^\n]*?op_name=\"([^\"]*)\"", text)
    }
    rows = [
        (us, op, names.get(op, "?")) for op, us in own.items() if scopes.get(op, "other") == phase
    ]
    return sorted(rows, reverse=True)[:k]
