"""Device tests: training, mask updates, prediction, export and reload on the
device named by ``HARMODT_TEST_DEVICE`` (default ``cpu``).

They run in every ``make test`` on the CPU; ``benchmarks/gpu_check.sh`` runs
them again with ``HARMODT_TEST_DEVICE=cuda:0`` (``pytest -m device``).
"""

from __future__ import annotations

import os
from pathlib import Path

import d3rlpy
import numpy as np
import pytest
import torch

from harmodt_algo import HarmoDT

from .test_harmodt import fit, small, synthetic, window

DEVICE = os.environ.get("HARMODT_TEST_DEVICE", "cpu")
pytestmark = pytest.mark.device


def _device_arg() -> str | bool:
    return False if DEVICE == "cpu" else DEVICE


@pytest.mark.parametrize("estimator", ["batch", "accumulated"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_update_masks_predict_on_the_device(
    estimator: str, precision: str, tmp_path: Path
) -> None:
    algo = HarmoDT(
        small(harmony_estimator=estimator, precision=precision, mask_interval=2),
        device=_device_arg(),
    )
    data = synthetic()
    algo.build_with_dataset(data)
    assert algo.impl is not None
    before = algo.impl.flat_masks().clone()
    fit(algo, data, n_steps=4)
    want = torch.device(DEVICE).type
    for module in (algo.impl._modules.transformer, algo.impl._modules.masks):
        for tensor in (*module.parameters(), *module.buffers()):
            assert tensor.device.type == want
    assert bool((algo.impl.flat_masks() != before).any())  # masks moved there
    action = algo.predict(window(algo), task=1)
    assert action.shape == (4,) and np.all(np.isfinite(action))
    # a model trained on the device reloads on the CPU with the same actions
    algo.save(str(tmp_path / "m.d3"))
    cpu = d3rlpy.load_learnable(str(tmp_path / "m.d3"), device=False)
    np.testing.assert_allclose(
        cpu.predict(window(cpu), task=1),
        action,
        atol=2e-2 if precision == "bf16" else 1e-5,
    )
    algo.for_task(0).save_policy(str(tmp_path / "p.pt"))
    assert (tmp_path / "p.pt").is_file()
