"""Gradient scale at the start of training: nnU-Net's Dice + CE against the Mime trainers, same network, same batches.

nnU-Net trains with SGD (momentum 0.99, lr 0.01, poly schedule), so the size of a loss's gradient acts as a
learning rate. Mime imitates the soft-Dice gradient (Eq. 2), not Dice + CE's: this script measures, for each trainer,
what one training step would apply. Every trainer is built by nnU-Net (``get_trainer_from_args``, ``initialize``)
with the same seed, so every trainer starts from the same network, and each sees the same training batches (the
data loader is seeded the same way). Per batch it computes the trainer's loss (deep supervision included) and the
L2 norm of its gradient with respect to the network's parameters, split into the cross-entropy term (nnU-Net's
``RobustCrossEntropyLoss`` over the same outputs with the same deep-supervision weights) and the rest, the overlap
term (Dice, Mime); it prints the mean over the batches and each norm's ratio to nnU-Net's default trainer.

Set-up as for ``compare.py`` (``$nnUNet_preprocessed`` with the CPU configurations, ``$nnUNet_extTrainer``)::

    python examples/nnunet/gradient_scale.py --dataset 27 --configuration 2d_cpu128 --batches 8
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch

TRAINERS = (
    "nnUNetTrainer_CPUBudget",
    "nnUNetTrainerMimeCE_CPUBudget",
    "nnUNetTrainerMime_CPUBudget",
    "nnUNetTrainerMimeFixed_CPUBudget",
)


def _grad_vector(loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, parameters)])


def measure(dataset: str, configuration: str, trainer_name: str, batches: int, seed: int) -> dict[str, float]:
    """Mean over ``batches`` training batches of the loss and of the gradient norms (total, overlap, CE)."""
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

    from nnunet_trainers.seeding import seed_everything

    trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, device=torch.device("cpu"))
    seed_everything(seed)
    trainer.initialize()
    seed_everything(seed + 1)
    loader, _ = trainer.get_dataloaders()
    network = trainer.network
    parameters = [p for p in network.parameters() if p.requires_grad]
    deep_supervision = isinstance(trainer.loss, DeepSupervisionWrapper)
    one_scale = trainer.loss.loss if deep_supervision else trainer.loss
    # nnU-Net's DC_and_CE_loss and this package's NnUNetLossAdapter both weight their cross-entropy by weight_ce
    weight_ce = float(getattr(one_scale, "weight_ce", 0.0))
    ce = RobustCrossEntropyLoss()
    cross_entropy = DeepSupervisionWrapper(ce, trainer.loss.weight_factors) if deep_supervision else ce
    rows: list[dict[str, float]] = []
    for _ in range(batches):
        batch: dict[str, Any] = next(loader)
        data, target = batch["data"], batch["target"]
        output = network(data)
        loss = trainer.loss(output, target)
        total = _grad_vector(loss, parameters)
        ce_part = (
            weight_ce * _grad_vector(cross_entropy(output, target), parameters)
            if weight_ce
            else torch.zeros_like(total)
        )
        rows.append(
            {
                "loss": float(loss.detach()),
                "grad_total": float(total.norm()),
                "grad_overlap": float((total - ce_part).norm()),
                "grad_ce": float(ce_part.norm()),
            }
        )
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="27")
    parser.add_argument("--configuration", default="2d_cpu128")
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    parser.add_argument("--batches", type=int, default=8, help="training batches to average over (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {t: measure(args.dataset, args.configuration, t, args.batches, args.seed) for t in args.trainers}
    reference = results[args.trainers[0]]
    print(f"\n{args.configuration}, seed {args.seed}, mean over {args.batches} batches at initialisation")
    print(f"ratios against {args.trainers[0]}'s total gradient norm\n")
    print("| trainer | loss | gradient norm | overlap term | CE term | total / default |")
    print("|---|---:|---:|---:|---:|---:|")
    for trainer, r in results.items():
        ratio = r["grad_total"] / reference["grad_total"]
        print(
            f"| `{trainer}` | {r['loss']:.4f} | {r['grad_total']:.4g} | {r['grad_overlap']:.4g} | "
            f"{r['grad_ce']:.4g} | {ratio:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
