"""The settings of one experiment (:class:`ExperimentConfig`) and the error type for bad user input."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_LOSSES", "ExperimentConfig", "ExperimentError"]


#: The example's default comparison: the recommended loss (the adaptive Mime + cross-entropy), the loss users train
#: with today (Dice + cross-entropy, MONAI's ``DiceCELoss``), the adaptive and the paper's fixed Mime alone, V-Net and
#: cross-entropy alone.
DEFAULT_LOSSES: tuple[str, ...] = ("mime_adaptive+ce", "dice+ce", "mime_adaptive", "mime", "vnet", "ce")

#: The presets of :meth:`ExperimentConfig.preset`: changes to the field defaults (which are the 2D settings).
PRESETS: dict[tuple[bool, int], dict[str, Any]] = {
    (False, 2): {},
    (False, 3): dict(  # 3D: a GPU run
        patch_size=(32, 32, 32),
        batch_size=4,
        sw_batch_size=4,
        synthetic_size=(64, 64, 64),
        synthetic_train=100,
        synthetic_val=20,
        out="results/synthetic3d",
    ),
    (True, 2): dict(  # every loss in well under a minute on 2 CPU cores
        epochs=2,
        steps_per_epoch=100,
        batch_size=8,
        channels=(8, 16, 32),
        synthetic_train=60,
        synthetic_val=12,
        synthetic_size=(96, 96),
        out="results/quick",
    ),
    (True, 3): dict(  # 3D smoke run: seconds per loss on one CPU thread
        epochs=2,
        steps_per_epoch=10,
        batch_size=2,
        patch_size=(16, 16, 16),
        channels=(4, 8, 16),
        sw_batch_size=4,
        synthetic_train=12,
        synthetic_val=3,
        synthetic_size=(32, 32, 32),
        out="results/quick3d",
    ),
}


class ExperimentError(Exception):
    """A problem with the user's input (data folder, loss spec, settings): reported as one line, no traceback."""


@dataclass
class ExperimentConfig:
    """Every setting of one experiment (all losses share them). Field names match the command-line flags."""

    data: str | None = None  #: nnU-Net raw dataset folder; None: the built-in synthetic data
    losses: list[str] = field(default_factory=lambda: list(DEFAULT_LOSSES))  #: loss specs (module docstring)
    out: str | None = "results/synthetic"  #: output folder; None: write nothing
    device: str = "auto"  #: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"
    seed: int = 0  #: seeds the model initialisation, the patch sampling and the crops
    data_seed: int = 0  #: seeds the synthetic data and the train/val split of a folder without splits.json
    epochs: int = 12
    steps_per_epoch: int = 100  #: optimizer steps per epoch (per process under DDP)
    batch_size: int = 8  #: patches per step (per process)
    spatial_dims: int = 2  #: 2: 2D patches of images (or of the slices of volumes); 3: 3D patches of volumes
    patch_size: tuple[int, ...] = (64, 64)  #: one size per spatial axis
    lr: float = 1e-3
    channels: tuple[int, ...] = (16, 32, 64, 128)  #: UNet feature maps per level
    num_res_units: int = 1
    #: deep supervision: 0 (default) trains the UNet on its one output; N >= 1 trains a MONAI ``DynUNet`` with N
    #: supervised heads (``deep_supervision=True, deep_supr_num=N``) under ``monai.losses.DeepSupervisionLoss``
    deep_supervision: int = 0
    num_workers: int = 0  #: DataLoader workers for patch sampling (crops are reproducible per num_workers value)
    amp: bool = True  #: float16 autocast + GradScaler (CUDA only)
    sw_batch_size: int = 16  #: windows per forward pass in sliding-window inference
    sw_overlap: float = 0.25
    max_val_cases: int | None = None  #: evaluate on the first N held-out cases only
    val_fraction: float = 0.2  #: held-out share when an nnU-Net folder has no splits.json
    exclude_both_empty: bool = False  #: metric option: leave (case, class) out when absent from both
    eval_epochs: tuple[int, ...] = ()  #: also evaluate after these epochs (several budgets from one run)
    synthetic_train: int = 200  #: built-in data: training images (volumes in 3D)
    synthetic_val: int = 50  #: built-in data: held-out images (volumes in 3D)
    synthetic_size: tuple[int, ...] = (128, 128)  #: built-in data: image (volume) shape, one size per spatial axis
    synthetic_rare_probability: float = 0.25
    checkpoints: bool = True  #: save each loss's final model under out/checkpoints
    figure: bool = True  #: write out/results.png
    progress: bool | None = None  #: tqdm bars; None: only on a terminal (else one log line per epoch)
    threads: int = 1  #: torch CPU threads per process (0: torch's default); see below

    # One thread per process is the default: these small models gain little from intra-op threads, and on a
    # shared or oversubscribed CPU OpenMP's busy-waiting makes 2 threads 3-50x *slower* than 1 (measured). To
    # use N cores, run N processes: ``torchrun --nproc_per_node N`` (DDP on the CPU with gloo).

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def preset(cls, quick: bool = False, spatial_dims: int = 2, **changes: Any) -> ExperimentConfig:
        """The settings of :data:`PRESETS` for ``(quick, spatial_dims)`` (``quick``: the ``--quick`` smoke run),
        overridden by ``changes``."""
        if spatial_dims not in (2, 3):
            raise ExperimentError(f"spatial-dims must be 2 or 3, got {spatial_dims}")
        return cls(**{**PRESETS[(quick, spatial_dims)], "spatial_dims": spatial_dims, **changes})

    @classmethod
    def quick(cls, **changes: Any) -> ExperimentConfig:
        """The ``--quick`` preset (2D unless ``spatial_dims=3`` is given): a smoke run of every loss on a CPU."""
        return cls.preset(True, **changes)

    def validate(self) -> None:
        """Raise :class:`ExperimentError` on impossible settings."""
        positive = ("epochs", "steps_per_epoch", "batch_size", "sw_batch_size", "synthetic_train", "synthetic_val")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ExperimentError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.spatial_dims not in (2, 3):
            raise ExperimentError(f"spatial-dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.patch_size) != self.spatial_dims or min(self.patch_size) < 8:
            raise ExperimentError(
                f"patch-size must be {self.spatial_dims} sizes of at least 8 for {self.spatial_dims}D patches, "
                f"got {tuple(self.patch_size)}"
            )
        if self.data is None and len(self.synthetic_size) != self.spatial_dims:
            raise ExperimentError(
                f"the built-in data's size must have {self.spatial_dims} axes for {self.spatial_dims}D patches, "
                f"got {tuple(self.synthetic_size)}"
            )
        depth = len(self.channels) - 1
        if depth < 1:
            raise ExperimentError("channels must list at least two feature sizes")
        if not 0 <= self.deep_supervision < depth:
            raise ExperimentError(
                f"deep-supervision must lie in [0, {depth - 1}] for {len(self.channels)} levels (DynUNet's heads sit "
                f"on the {depth - 1} upsampling levels above the last), got {self.deep_supervision}"
            )
        if any(p % (2**depth) for p in self.patch_size):
            raise ExperimentError(
                f"patch-size {tuple(self.patch_size)} must be divisible by {2**depth} "
                f"(the UNet downsamples {depth} times)"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ExperimentError(f"val-fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ExperimentError(f"sw-overlap must be in [0, 1), got {self.sw_overlap}")
        if self.threads < 0:
            raise ExperimentError(f"threads must be >= 0, got {self.threads}")
        if self.num_workers < 0:
            raise ExperimentError(f"num-workers must be >= 0, got {self.num_workers}")
        if not self.losses:
            raise ExperimentError("no loss given")
        bad = [e for e in self.eval_epochs if not 1 <= int(e) <= self.epochs]
        if bad:
            raise ExperimentError(f"eval-epochs must lie in [1, epochs={self.epochs}], got {bad}")
