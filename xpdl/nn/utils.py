"""``xpdl.nn.utils``: where PyTorch users look for :func:`clip_grad_norm_`."""

from .module import clip_grad_norm_

__all__ = ["clip_grad_norm_"]
