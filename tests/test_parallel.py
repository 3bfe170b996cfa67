"""Data-parallel training over 4 (forced host) CPU devices gives the single-device result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventsnn.parallel import data_mesh

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import jax, numpy as np
from eventsnn.classify import ClassifierConfig
from eventsnn.tasks import run_point_task
from eventsnn.train import TrainConfig
assert len(jax.devices()) == 4, jax.devices()
out = {}
for devices in (1, 4):
    r = run_point_task("yinyang", ClassifierConfig(hidden=24, grad=sys.argv[1]),
                       TrainConfig(epochs=2, batch_size=32, seed=0), train_samples=320,
                       devices=devices)
    out[devices] = [np.asarray(w).tolist() for w in r["weights"]]
print(json.dumps(out))
"""


@pytest.mark.parametrize("grad", ["eventprop"])
def test_four_devices_give_the_one_device_result(grad):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, grad],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    import numpy as np

    for one, four in zip(out["1"], out["4"]):
        one, four = np.asarray(one), np.asarray(four)
        assert np.abs(one).max() > 0
        # Only the order of the batch sums differs between the two.
        np.testing.assert_allclose(four, one, rtol=1e-4, atol=1e-5)


def test_mesh_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        data_mesh(64, 64)
    assert data_mesh(1, 63) is None
    with pytest.raises(ValueError, match="devices must be >= 1"):
        data_mesh(0, 64)
