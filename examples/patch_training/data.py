"""The data of an experiment: the built-in synthetic images, or an nnU-Net raw dataset (:mod:`.nnunet_raw`)."""

from __future__ import annotations

from .cases import Case, PreparedData, normalise
from .config import ExperimentConfig, ExperimentError
from .nnunet_raw import nnunet_data

__all__ = ["prepare_data", "synthetic_data"]


def synthetic_data(config: ExperimentConfig) -> PreparedData:
    """The built-in rare-class data (:mod:`monai_mime.synthetic`): 2D images or 3D volumes of
    ``config.synthetic_size``, cases ``0..synthetic_train-1`` of ``data_seed`` for training, the next
    ``synthetic_val`` held out; each z-score normalised."""
    from monai_mime.synthetic import CLASS_NAMES, make_dataset

    size = tuple(int(s) for s in config.synthetic_size)
    rare = config.synthetic_rare_probability
    try:
        tr_x, tr_y = make_dataset(
            config.synthetic_train, seed=config.data_seed, spatial_size=size, rare_probability=rare
        )
        va_x, va_y = make_dataset(
            config.synthetic_val,
            seed=config.data_seed,
            start=config.synthetic_train,
            spatial_size=size,
            rare_probability=rare,
        )
    except ValueError as e:
        raise ExperimentError(f"synthetic data: {e}") from None
    spacing = (1.0,) * len(size)
    train = [{"image": normalise(x[None]), "label": y[None]} for x, y in zip(tr_x, tr_y, strict=True)]
    val = [
        Case(f"synthetic_{config.synthetic_train + i:03d}", normalise(x[None]), y, spacing)
        for i, (x, y) in enumerate(zip(va_x, va_y, strict=True))
    ]
    if config.max_val_cases is not None:
        val = val[: config.max_val_cases]
    return PreparedData(
        name="synthetic",
        class_names=list(CLASS_NAMES),
        in_channels=1,
        train_items=train,
        val_cases=val,
        slice_axis=None,
        num_train_cases=len(train),
        spacing_unit="px",
        source=f"monai_mime.synthetic (data seed {config.data_seed}, {size})",
        view_axis=len(size) - 1 if len(size) == 3 else None,
    )


def prepare_data(config: ExperimentConfig) -> PreparedData:
    """Load (or generate) and check the data of ``config``; raise :class:`ExperimentError` on bad input."""
    return nnunet_data(config) if config.data else synthetic_data(config)
