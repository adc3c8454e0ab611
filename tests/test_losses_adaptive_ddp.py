"""AdaptiveMimeLoss under torch.distributed: every rank holds the same running averages and a/b after every step.

Two real gloo processes train with different data (and batch sizes) per rank; their buffers must be identical after
each step and equal to those of one process fed the concatenated batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from monai_mime import AdaptiveMimeLoss

STEPS = 4
BATCH_SIZES = (2, 3)  # uneven, as nnU-Net splits an odd global batch


def _loss() -> AdaptiveMimeLoss:
    return AdaptiveMimeLoss(
        [0.02, 0.05], [0.004, 0.002], momentum=0.5, include_background=False, softmax=True, to_onehot_y=True
    )


def _data(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per rank: logits (B_r, 3, 12, 12) and labels; different on each rank and each step."""
    generator = torch.Generator().manual_seed(step)
    return [
        (torch.randn(b, 3, 12, 12, generator=generator), torch.randint(0, 3, (b, 1, 12, 12), generator=generator))
        for b in BATCH_SIZES
    ]


def _states(loss: AdaptiveMimeLoss, feed: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    states = []
    for logits, labels in feed:
        logits = logits.clone().requires_grad_()
        loss(logits, labels).backward()
        states.append({k: v.clone() for k, v in loss.state_dict().items()})
    return states


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=len(BATCH_SIZES))
    try:
        states = _states(_loss(), [_data(step)[rank] for step in range(STEPS)])
        torch.save(states, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes (a few seconds)
def test_ranks_hold_identical_averages_equal_to_one_process_on_the_global_batch(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(
        _worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=len(BATCH_SIZES), join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(len(BATCH_SIZES))]
    concatenated = [tuple(torch.cat(parts) for parts in zip(*_data(step))) for step in range(STEPS)]
    single = _states(_loss(), concatenated)  # type: ignore[arg-type]
    unsynced = _states(_loss(), [_data(step)[0] for step in range(STEPS)])
    for step in range(STEPS):
        for name, value in ranks[0][step].items():
            assert torch.equal(ranks[1][step][name], value), (step, name)  # bitwise the same on every rank
            torch.testing.assert_close(value, single[step][name], rtol=1e-6, atol=0)
        assert not torch.equal(ranks[0][step]["running_union"], unsynced[step]["running_union"])
