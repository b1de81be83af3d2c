"""Running one job as several processes under torchrun: the job's ranks, gradient averaging, gathering the
global batch (with and without autograd), global batch norm, FSDP sharding of towers. The distributed losses
are in `transferlab.losses.distributed`; they gather with `all_gather_with_grad`."""

from transferlab.distributed.batch_norm import GlobalBatchNorm, global_batch_norm
from transferlab.distributed.gather import all_gather_no_grad, all_gather_with_grad, rank_and_size
from transferlab.distributed.sharding import (
    clip_gradients,
    full_tensors,
    gradient_norm,
    shard_like,
    shard_optimizer_state,
    shard_towers,
)
from transferlab.distributed.world import (
    World,
    average_gradients,
    barrier,
    broadcast_module,
    current,
    gather_rows,
    launch_env,
    local_device,
    on_main,
    start,
    stop,
    sum_scalars,
)

__all__ = ["GlobalBatchNorm", "World", "all_gather_no_grad", "all_gather_with_grad", "average_gradients", "barrier",
           "broadcast_module", "clip_gradients", "current", "full_tensors", "gather_rows", "global_batch_norm",
           "gradient_norm", "launch_env", "local_device", "on_main", "rank_and_size", "shard_like",
           "shard_optimizer_state", "shard_towers", "start", "stop", "sum_scalars"]
