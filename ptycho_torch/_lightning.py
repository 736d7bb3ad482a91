"""Lightning, imported only after an installed torchvision has been made importable.

Lightning imports torchmetrics, which imports torchvision when it is installed; see
:mod:`ptycho_torch.torchvision_ops` for the torchvision builds that would fail there.
"""

from ptycho_torch.torchvision_ops import allow_torchvision_without_ops

allow_torchvision_without_ops()

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import Callback, EarlyStopping  # noqa: E402
from lightning.pytorch.utilities.rank_zero import rank_zero_only  # noqa: E402

__all__ = ["Callback", "EarlyStopping", "pl", "rank_zero_only"]
