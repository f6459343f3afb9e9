"""Quickstart: the README snippet, runnable as is (about 2 minutes on 2 cores).

Build a small MT5 dataset, fit HarmoDT-F, evaluate one task with d3rlpy's own
evaluator through the task-bound view, save, reload, predict the same actions.
"""

# --8<-- [start:quickstart]
import harmodt_algo  # registers HarmoDT with d3rlpy

# isort: split
import d3rlpy
import minari
import numpy as np

from dataset_recipes import build_metaworld_dataset, dataset_id, make_env

ds_id = dataset_id("MT5", "near-optimal")  # metaworld-v3/mt5/near-optimal-v0
if ds_id not in minari.list_local_datasets():  # reuse it if already built
    build_metaworld_dataset("MT5", quality="near-optimal", episodes_per_task=10)
dataset = minari.load_dataset(ds_id)
algo = harmodt_algo.HarmoDT.from_preset("harmodt-f").fit(dataset, n_steps=1000)

task = "button-press-topdown-v3"
env = make_env(dataset, task)  # the task's held-out evaluation goals
actor = algo.for_task(task).as_stateful_wrapper(target_return=4500)
print("return:", d3rlpy.metrics.evaluate_transformer_with_environment(actor, env, 2))

algo.save("harmodt.d3")
loaded = d3rlpy.load_learnable("harmodt.d3")
obs, _ = env.reset()
a = algo.for_task(task).as_stateful_wrapper(4500).predict(obs, 0.0)
b = loaded.for_task(task).as_stateful_wrapper(4500).predict(obs, 0.0)
assert np.array_equal(a, b), "reloaded model acts differently"
# --8<-- [end:quickstart]
