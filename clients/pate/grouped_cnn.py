"""K stacked 2-D CNN teachers run as ONE grouped convolutional network (no ``vmap``).

``clients.pate.teacher_ensemble`` trains a chunk of teachers as one model whose weights are stacked along
a leading teacher axis. For 2-D CNNs, ``torch.func.vmap`` over ``functional_call`` lowers each teacher's
convolution to a batched convolution that on CPU is barely faster than the teachers one after another.
This module computes the same K networks with the grouped convolution of AlexNet (Krizhevsky et al.
2012, "ImageNet classification with deep convolutional neural networks", which split its filters into
groups that see only their own group's channels; ResNeXt, Xie et al. 2017, made the group count a
design axis): the K teachers' images lie side by side along the channel axis, ``(B, K*C_in, H, W)``,
and ``conv2d(..., groups=K)`` with the K weights concatenated, ``(K*C_out, C_in, kh, kw)``, applies
teacher ``k``'s filters to teacher ``k``'s channels only. Activations are kept in channels-last memory
layout, for which oneDNN's CPU kernels are fastest; a ReLU right before a max-pooling runs after it
(``max`` and ReLU are both monotone, so values and gradients are the same) on fewer values. Linear
layers become one batched matrix product (``torch.baddbmm``) over the teacher axis. Channel group ``k``
holds teacher ``k``'s own minibatch only, so no teacher ever sees another teacher's data: each
teacher's logits and gradients are those of the plain network up to float rounding.

:func:`supports` says whether a network is a 2-D CNN made of layers this module runs (the ``cnn`` encoder
of ``clients.encoders`` with its linear head); :func:`grouped_logits` is the stacked forward and
:func:`grouped_loss` the stacked training loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clients.encoders import AddChannel, Classifier

SUPPORTED_LAYERS = (AddChannel, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(parameter prefix, layer)`` of a :class:`~clients.encoders.Classifier` with a ``Sequential``
    encoder, in order; empty if the model has any other form."""
    if not isinstance(model, Classifier) or not isinstance(model.encoder, nn.Sequential):
        return []
    encoder = [(f"encoder.{name}", layer) for name, layer in model.encoder.named_children()]
    return [*encoder, ("head", model.head)]


def supports(model: nn.Module, input_rank: int) -> bool:
    """Whether :func:`grouped_logits` runs ``model`` on inputs of rank ``input_rank`` (2-D images only).

    At least one ``Conv2d`` (groups 1, zero padding, with bias) and otherwise ``MaxPool2d``,
    ``AdaptiveAvgPool2d``, ReLU, ``Flatten`` and ``Linear`` (with bias) layers, the channel axis added by
    ``AddChannel``: the layouts measured faster than ``vmap`` (``benchmarks/teachers.py``).
    """
    layers = _layers(model)
    if input_rank != 2 or not any(isinstance(layer, nn.Conv2d) for _, layer in layers):
        return False
    for _, layer in layers:
        if not isinstance(layer, SUPPORTED_LAYERS):
            return False
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"
                                             or isinstance(layer.padding, str) or layer.bias is None):
            return False
        if isinstance(layer, nn.Linear) and layer.bias is None:
            return False
        if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
            return False
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return False
    return True


def grouped_logits(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits ``(K, B, n_classes)`` of the K teachers whose stacked weights are ``params``.

    ``x`` is ``(K, B, H, W)``, row ``k`` teacher ``k``'s own minibatch; ``model`` gives the architecture
    only (its weights are ignored; it may live on the meta device). Equals
    ``vmap(functional_call(model, ...))`` up to float rounding.

    Raises
    ------
    ValueError
        If :func:`supports` refuses ``model`` for 2-D inputs or ``x`` is not ``(K, B, H, W)``.
    """
    if not supports(model, 2):
        raise ValueError(f"grouped_logits runs Classifier CNNs of {SUPPORTED_LAYERS} only, got {model}")
    k = next(iter(params.values())).shape[0]
    if x.dim() != 4 or x.shape[0] != k:
        raise ValueError(f"x must be (K={k}, B, H, W), got shape {tuple(x.shape)}")
    b = x.shape[1]
    h = x.transpose(0, 1)  # (B, K, H, W): teacher k's images on channel k
    flat = False  # False: (B, K*C, H, W) channels of the grouped layers; True: (K, B, F) features
    layers = _layers(model)
    for i, (prefix, layer) in enumerate(layers):
        if isinstance(layer, nn.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1][1], nn.MaxPool2d):
            continue  # ReLU then max-pooling equals max-pooling then ReLU (both monotone): see below
        if isinstance(layer, AddChannel):
            h = h.contiguous(memory_format=torch.channels_last)
        elif isinstance(layer, nn.Conv2d):
            w = params[f"{prefix}.weight"]
            h = F.conv2d(h, w.reshape(k * w.shape[1], *w.shape[2:]), params[f"{prefix}.bias"].reshape(-1),
                         stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=k)
        elif isinstance(layer, nn.ReLU):
            h = F.relu(h)
        elif isinstance(layer, nn.MaxPool2d):
            h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                             ceil_mode=layer.ceil_mode)
            if i > 0 and isinstance(layers[i - 1][1], nn.ReLU):
                h = F.relu(h)  # the ReLU before the pooling, on the pooled (4x fewer) values
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            h = F.adaptive_avg_pool2d(h, layer.output_size)
        elif isinstance(layer, nn.Flatten):
            # per teacher, channels then rows then columns, as nn.Flatten on one teacher's (C, H, W)
            h, flat = h.reshape(b, k, -1).transpose(0, 1), True
        else:  # nn.Linear (supports() admits nothing else)
            if not flat:  # a Linear straight on images: flatten first (mlp encoders begin with Flatten)
                h, flat = h.reshape(b, k, -1).transpose(0, 1), True
            weight, bias = params[f"{prefix}.weight"], params[f"{prefix}.bias"]
            h = torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))
    if not flat:
        raise ValueError("the network ends before its linear head")
    return h


def grouped_loss(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor) -> torch.Tensor:
    """The SUM over teachers of each teacher's mean cross-entropy on its own minibatch ``(x[k], y[k])``.

    ``x`` ``(K, B, H, W)``, ``y`` ``(K, B)``: every teacher's minibatch has the same size ``B``, so the
    sum over all ``K*B`` samples divided by ``B`` is the sum of the K means.
    """
    logits = grouped_logits(model, params, x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / y.shape[1]
