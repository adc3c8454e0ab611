"""The data of an experiment: the built-in synthetic images, or an nnU-Net raw dataset (:mod:`.nnunet_raw`)."""

from __future__ import annotations

from .cases import Case, PreparedData, normalise
from .config import ExperimentConfig, ExperimentError
from .nnunet_raw import nnunet_data

__all__ = ["prepare_data", "synthetic_data"]


def synthetic_data(config: ExperimentConfig) -> PreparedData:
    from monai_mime.synthetic import CLASS_NAMES, make_dataset

    kw = {"spatial_size": tuple(config.synthetic_size), "rare_probability": config.synthetic_rare_probability}
    try:
        tr_x, tr_y = make_dataset(config.synthetic_train, seed=config.data_seed, **kw)  # type: ignore[arg-type]
        va_x, va_y = make_dataset(
            config.synthetic_val,
            seed=config.data_seed,
            start=config.synthetic_train,
            **kw,  # type: ignore[arg-type]
        )
    except ValueError as e:
        raise ExperimentError(f"synthetic data: {e}") from None
    train = [{"image": normalise(x[None]), "label": y[None]} for x, y in zip(tr_x, tr_y, strict=True)]
    val = [
        Case(f"synthetic_{config.synthetic_train + i:03d}", normalise(x[None]), y, (1.0, 1.0))
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
        source=f"monai_mime.synthetic (data seed {config.data_seed}, {tuple(config.synthetic_size)})",
    )


def prepare_data(config: ExperimentConfig) -> PreparedData:
    """Load (or generate) and check the data of ``config``; raise :class:`ExperimentError` on bad input."""
    return nnunet_data(config) if config.data else synthetic_data(config)
