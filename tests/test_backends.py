"""The backend seam: backends by name, the conformance suite (the mock, the README's toy
chip, and broken backends it must catch), command lines that list and refuse backends."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventsnn import hardware
from eventsnn.hardware import MockChip, MockSpec, Recording
from eventsnn.hardware.registry import UnknownBackendError, open_backend, parse_options
from eventsnn.hardware.testing import ConformanceError, run_conformance

REPO = Path(__file__).resolve().parents[1]


def readme_toy_chip():
    """The toy backend of README's "Connecting a chip", executed from the README text."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (code,) = [b for b in blocks if "class ToyChip(Backend)" in b]
    namespace: dict = {}
    exec(compile(code, "README.md:ToyChip", "exec"), namespace)
    return namespace["ToyChip"]


def test_readme_toy_chip_passes_conformance():
    toy = readme_toy_chip()
    report = run_conformance(toy("lab-7"))
    assert report["round_trip"] == report["limits"] == report["traces"] == "ok"
    assert report["determinism"].startswith("skipped")  # the toy promises no replay
    assert str(toy("lab-7").identity()) == "toy:lab-7"


def test_mock_passes_conformance():
    report = run_conformance(open_backend("mock", chip=3, n_neurons=24))
    assert set(report.values()) == {"ok"}, report


class _Milliseconds(MockChip):
    """Reports spike times in ms instead of us."""

    def run(self, *a, **kw):
        rec = super().run(*a, **kw)
        return Recording(tuple(t / 1000 for t in rec.times), rec.indices, rec.overflow,
                         rec.trace_times, rec.traces)  # fmt: skip


class _Unchecked(MockChip):
    """Takes any configuration."""

    def configure(self, config):
        self._config, self._built = config, None


class _Forgetful(MockChip):
    """Claims to be reproducible but ignores a reset of its run counter."""

    @property
    def run_count(self):
        return self._run_count

    @run_count.setter
    def run_count(self, value):
        pass


@pytest.mark.parametrize(
    "cls, check",
    [(_Milliseconds, "round_trip"), (_Unchecked, "limits"), (_Forgetful, "determinism")],
)
def test_conformance_catches_broken_backends(cls, check):
    with pytest.raises(ConformanceError, match=rf"(?m)^{check}: ") as err:
        run_conformance(cls(0, MockSpec(n_neurons=24)))
    failed = [line.split(":")[0] for line in str(err.value).splitlines()[1:]]
    assert failed == [check]


def test_backends_by_name():
    assert "mock" in hardware.backend_names()
    chip = open_backend("mock", chip="2", n_neurons=24, jitter=0.0)
    assert isinstance(chip, MockChip) and chip.spec.jitter == 0.0
    assert str(chip.identity()) == "mock:2-n24"
    with pytest.raises(UnknownBackendError, match="unknown backend 'nope'; installed backends: "):
        open_backend("nope")
    with pytest.raises(ValueError, match="mock: unknown option 'speed'"):
        open_backend("mock", speed=3)
    with pytest.raises(ValueError, match="MockSpec.n_neurons"):
        open_backend("mock", n_neurons=0)
    assert parse_options(["jitter=0.05", "n-neurons=24", "x=true", "s=abc"]) == {
        "jitter": 0.05,
        "n_neurons": 24,
        "x": True,
        "s": "abc",
    }
    with pytest.raises(ValueError, match="must be KEY=VALUE"):
        parse_options(["jitter"])


def test_no_module_outside_the_mock_imports_it():
    """Calibration, training in the loop and the runners see chips through `Backend`."""
    allowed = {REPO / "src/eventsnn/hardware/mock.py", REPO / "src/eventsnn/hardware/__init__.py"}
    pattern = re.compile(r"^\s*(from\s+\S*mock\S*\s+import|import\s+\S*mock)|MockChip|mock_chip")
    offenders = []
    for folder in ("src/eventsnn", "calib", "tasks"):
        for path in (REPO / folder).rglob("*.py"):
            if path in allowed:
                continue
            for no, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{no}: {line.strip()}")
    assert not offenders, offenders


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


@pytest.mark.parametrize("module", ["calib", "tasks.yinyang_hardware"])
def test_command_lines_list_and_refuse_backends(module):
    helped = _cli("-m", module, "--help")
    assert helped.returncode == 0 and "installed: mock" in helped.stdout
    bad = _cli("-m", module, "--backend", "nope")
    assert bad.returncode == 2
    last = bad.stderr.strip().splitlines()[-1]
    assert "unknown backend 'nope'; installed: mock" in last


def test_task_help_imports_no_jax():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['yinyang_hardware', '--help']\n"
        "try:\n    runpy.run_module('tasks.yinyang_hardware', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('jax' in sys.modules, 'eventsnn' in sys.modules)\n"
    )
    done = _cli("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--neurons", "0"], "--neurons: must be a positive integer, got 0"),
        (["--tau-mem", "-1"], "--tau-mem: must be > 0"),
        (["--option", "jitter"], "must be KEY=VALUE"),
        (["--option", "speed=3"], "mock: unknown option 'speed'"),
        (["--neurons", "600"], "--neurons 600: mock:0 has 512 neurons"),
    ],
)
def test_calib_refuses_bad_options_in_one_line(args, message, tmp_path):
    done = _cli("-m", "calib", *args, "--out", str(tmp_path / "c.json"))
    assert done.returncode == 2
    assert message in done.stderr.strip().splitlines()[-1], done.stderr
