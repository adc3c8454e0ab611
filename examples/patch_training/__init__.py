"""Patch-based training and evaluation of the losses, as importable functions.

``examples/train_patches.py`` is the command line over this package; an ablation imports it directly::

    import sys; sys.path.insert(0, "examples")
    from patch_training import ExperimentConfig, prepare_data, run_experiment

    config = ExperimentConfig(data="/path/to/Dataset027_ACDC", patch_size=(128, 128), epochs=30,
                              steps_per_epoch=250, eval_epochs=(12,), out=None)
    data = prepare_data(config)                       # load once, reuse for many settings and seeds
    for seed in (0, 1):
        for spec in ["mime:mode=dice:overlap=0.5", "mime:mode=balance:gamma=0.5", "dice"]:
            res = run_experiment(config.replace(losses=[spec], seed=seed), data=data)
            entry = res["losses"][spec]
            print(seed, spec, entry["mean"]["dice"], entry["intermediate"]["12"]["mean"]["dice"])

``seed`` changes the training only (initialisation, sampling, crops); ``data_seed`` the built-in data. With the
constant learning rate and epoch-seeded sampling, the evaluation after epoch ``e`` (``eval_epochs``) is exactly
what a run of ``e`` epochs gives, so one run scores several training budgets.

What one experiment does, for each loss spec, from the same seed (one module per step):

1. ``data``, ``nnunet_raw``: training items: the images (``spatial_dims=3``: volumes) of the built-in synthetic
   data (:mod:`monai_mime.synthetic`), or the training cases of an nnU-Net raw dataset: for 2D patches the 2D
   slices of its volumes (taken across the axis with the coarsest spacing, e.g. the short-axis stack of ACDC),
   for 3D patches the whole volumes; z-score normalised per image/volume.
2. ``sampling``: uniform random patches (``RandSpatialCropd`` after ``SpatialPadd``, 2D or 3D) of uniformly drawn
   training items, ``batch_size`` per step and ``steps_per_epoch`` steps per epoch per process.
3. ``training``, ``runtime``: a MONAI ``UNet`` (2D or 3D), Adam, mixed precision on CUDA, DDP under ``torchrun``.
4. ``specs``: the loss from the registry (:func:`monai_mime.get_loss`); Mime's a/b from
   :class:`monai_mime.ClassStatistics` over the training labels only, rescaled to the patch size by default.
5. ``evaluation``: ``sliding_window_inference`` over each whole held-out image or volume (slice by slice for
   volumes under 2D patches), then per-class Dice, HD95 (paper conventions, :mod:`monai_mime.metrics`, in
   physical units for volumes) and the predicted/true volume ratio.
6. ``reporting``, ``figures``, ``checkpoints``: ``results.json``, ``results.md``, ``results.png`` and
   ``checkpoints/<loss>.pt`` (model and loss state); ``experiment`` runs the steps above for every loss.

``runs`` and ``sweep`` serve ``examples/ablation.py``: its run folders and scores, and the patch-size axis at
equal voxels per step.

The loss-spec syntax (``name[:key=value...]``) is documented in :mod:`.specs`.
"""

from .cases import Case, PreparedData
from .config import DEFAULT_LOSSES, ExperimentConfig, ExperimentError
from .data import prepare_data
from .evaluation import evaluate_model
from .experiment import run_experiment
from .figures import plot_results
from .reporting import results_markdown, write_results
from .sampling import PatchSampler
from .specs import LossSpec, build_loss, parse_loss_specs
from .training import build_model, train_model, training_objective

__all__ = [
    "DEFAULT_LOSSES",
    "Case",
    "ExperimentConfig",
    "ExperimentError",
    "LossSpec",
    "PatchSampler",
    "PreparedData",
    "build_loss",
    "build_model",
    "evaluate_model",
    "parse_loss_specs",
    "plot_results",
    "prepare_data",
    "results_markdown",
    "run_experiment",
    "train_model",
    "training_objective",
    "write_results",
]
