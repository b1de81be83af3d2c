"""The job description read from torchrun / SLURM variables, and the single-process identities."""

import pytest
import torch

from transferlab import distributed
from transferlab.distributed import World, launch_env
from transferlab.errors import UserError


def test_torchrun_variables():
    assert launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == World(3, 8, 1)


def test_slurm_variables_when_srun_starts_one_task_per_device():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "MASTER_ADDR": "node01"}
    assert launch_env(env) == World(5, 8, 1)


def test_torchrun_wins_over_slurm_and_a_single_slurm_task_is_one_process():
    both = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "4",
            "SLURM_LOCALID": "0"}
    assert launch_env(both) == World(1, 2, 1)
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}) == World()
    assert launch_env({}) == World() and World().main


@pytest.mark.parametrize("env, message", [
    ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "not all integers"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK=None"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "is not a rank"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}, "MASTER_ADDR"),
])
def test_bad_job_descriptions_say_what_is_wrong(env, message):
    with pytest.raises(UserError, match=message):
        launch_env(env)


def test_one_process_collectives_are_identities():
    grad = torch.randn(3)
    parameter = torch.nn.Parameter(torch.zeros(3))
    parameter.grad = grad.clone()
    distributed.average_gradients([parameter])
    assert torch.equal(parameter.grad, grad)
    assert distributed.sum_scalars([torch.tensor(2.5), 1]) == [2.5, 1.0]
    assert distributed.on_main(lambda: "decided") == "decided"
    rows = torch.randn(4, 2)
    assert torch.equal(distributed.gather_rows(rows, [4])[0], rows)
    assert distributed.start() == World() and distributed.current() == World()
