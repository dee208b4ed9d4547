"""Knowledge distillation (Hinton et al. 2015) with optional attention transfer.

The student is trained through :func:`repsim.train.fit` with the distillation objective passed
as its ``loss``. A student that is a pruned copy of the teacher keeps its masks fixed (the
``weight_orig * weight_mask`` reparametrisation), which is "pruning + KD" as in Blakeney et al.
2021 ("Simon Says: Evaluating and Mitigating Bias in Pruned Neural Networks with Knowledge
Distillation").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repsim._core.fingerprints import unwrap_model
from repsim._core.hooks import attach_hooks, evaluating, frozen
from repsim.compress.prunable import clone_model
from repsim.data.adapt import as_grouped
from repsim.data.base import GroupedData, GroupedDataset
from repsim.errors import ConfigError, ModelError
from repsim.models.adapters import Inputs, inputs_to, model_logits
from repsim.train import FitResult, fit, resolve_device


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    T: float = 4.0,
    alpha: float = 0.9,
    gamma: float = 0.1,
) -> torch.Tensor:
    """Hinton knowledge-distillation loss.

    ``L = gamma * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``

    with the cross-entropy averaged over the batch and the KL divergence summed over classes and
    averaged over the batch (``reduction="batchmean"``). The ``T^2`` factor keeps the soft-target
    gradients on the scale of the hard-target ones (Hinton, Vinyals & Dean 2015, "Distilling the
    Knowledge in a Neural Network").

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor
        ``[batch, n_classes]``.
    labels : torch.Tensor
        ``[batch]`` integer classes.
    T : float
        Temperature (> 0).
    alpha, gamma : float
        Weights of the soft (KL) and hard (CE) terms (>= 0).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ModelError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; distillation needs the same output size."
        )
    ce = F.cross_entropy(student_logits, labels)
    kl = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits / T, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return gamma * ce + alpha * T * T * kl


def attention_map(a: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention map ``q = mean_c |A_c|^p``, flattened and L2-normalised per sample.

    Zagoruyko & Komodakis 2017, "Paying More Attention to Attention". ``a`` is
    ``[batch, C, H, W]`` (or any ``[batch, C, ...]``); returns ``[batch, H*W]``.
    """
    q = a.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(q, p=2, dim=1)


def attention_transfer_loss(
    student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor], p: float = 2.0
) -> torch.Tensor:
    """``sum_j mean_batch || q_s^j / ||q_s^j|| - q_t^j / ||q_t^j|| ||_2`` over matched layers j.

    Zagoruyko & Komodakis 2017 (their Eq. 2 with the L2 norm of the difference; the paper's
    ``beta / 2`` factor is left to the caller's weight). Matched maps must share spatial size.
    """
    total = torch.zeros((), device=student_feats[0].device)
    for s, t in zip(student_feats, teacher_feats, strict=True):
        if s.shape[2:] != t.shape[2:]:
            raise ModelError(
                f"Attention transfer needs matched layers of equal spatial size, got "
                f"{tuple(s.shape[2:])} (student) and {tuple(t.shape[2:])} (teacher)."
            )
        total = total + (attention_map(s, p) - attention_map(t, p)).norm(dim=1).mean()
    return total


class _Recorder:
    """Keep the latest output of each named layer (with its graph: the loss backpropagates)."""

    def __init__(self, model: nn.Module, names: Sequence[str], role: str) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.hooks = attach_hooks(model, [(n, self._hook(n)) for n in names], what=role)

    def _hook(self, name: str) -> Any:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            self.outputs[name] = out

        return hook

    def remove(self) -> None:
        self.hooks.remove()


class DistillationLoss:
    """The ``loss(model, x, y)`` callable :func:`repsim.train.fit` trains the student with.

    ``kd_loss(student(x), teacher(x), y) + beta * attention_transfer_loss(...)``; the teacher
    runs in eval mode under ``torch.no_grad``. With ``attention`` it hooks the teacher's
    layers (and, after :meth:`attach`, the student's); :meth:`remove` takes those hooks off,
    as does leaving a ``with DistillationLoss(...) as loss:`` block.
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        T: float = 4.0,
        alpha: float = 0.9,
        gamma: float = 0.1,
        attention: Mapping[str, str] | None = None,
        beta: float = 1.0,
        p: float = 2.0,
    ) -> None:
        if T <= 0 or alpha < 0 or gamma < 0 or beta < 0:
            raise ConfigError(
                f"Distillation needs T > 0 and alpha, gamma, beta >= 0 (got T={T}, "
                f"alpha={alpha}, gamma={gamma}, beta={beta})."
            )
        self.teacher = teacher
        self.T, self.alpha, self.gamma, self.beta, self.p = T, alpha, gamma, beta, p
        self.attention = dict(attention or {})
        self._teacher_rec = _Recorder(teacher, list(self.attention.values()), "teacher")
        self._student_rec: _Recorder | None = None
        self._student: nn.Module | None = None

    def attach(self, student: nn.Module) -> None:
        """Hook the student's attention layers (done by :func:`distill`)."""
        self._student = student
        self._student_rec = _Recorder(student, list(self.attention), "student")

    def remove(self) -> None:
        """Remove all forward hooks (only this loss's own)."""
        self._teacher_rec.remove()
        if self._student_rec is not None:
            self._student_rec.remove()

    def __enter__(self) -> DistillationLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __call__(self, model: nn.Module, x: Inputs, y: torch.Tensor) -> torch.Tensor:
        """The batch-mean distillation loss of ``model`` on ``(x, y)`` against the teacher.

        Logits of both models are read by their output rules
        (:func:`repsim.models.model_logits`); ``x`` is a tensor or a dict of tensors.
        """
        with torch.no_grad():
            self.teacher.eval()
            t_logits = model_logits(self.teacher, x)
        s_logits = model_logits(model, x)
        value = kd_loss(s_logits, t_logits, y, T=self.T, alpha=self.alpha, gamma=self.gamma)
        if self.attention and self.beta > 0:
            assert self._student_rec is not None
            s_feats = [self._student_rec.outputs[s] for s in self.attention]
            t_feats = [self._teacher_rec.outputs[t] for t in self.attention.values()]
            value = value + self.beta * attention_transfer_loss(s_feats, t_feats, self.p)
        return value


def distill(
    teacher: nn.Module,
    student: nn.Module,
    data: GroupedData | GroupedDataset | Any,
    *,
    T: float = 4.0,
    alpha: float = 0.9,
    gamma: float = 0.1,
    attention: Mapping[str, str] | Sequence[str] | None = None,
    beta: float = 1.0,
    p: float = 2.0,
    epochs: int = 5,
    inplace: bool = False,
    **fit_options: Any,
) -> tuple[nn.Module, FitResult]:
    """Train ``student`` to match ``teacher`` (Hinton KD, optional attention transfer).

    The objective is :func:`kd_loss` plus ``beta *`` :func:`attention_transfer_loss` over the
    ``attention`` layer pairs, minimised with :func:`repsim.train.fit`. If ``student`` is pruned
    its masks stay fixed, so pruned weights remain zero.

    Parameters
    ----------
    teacher : torch.nn.Module
        Frozen: eval mode, no gradients.
    student : torch.nn.Module
        A pruned copy of the teacher or another architecture with the same output size
        (copied unless ``inplace``).
    data : GroupedData, GroupedDataset or a container
        Training split; a whole dataset trains on ``.train`` and, unless ``test=`` is given,
        evaluates on ``.test``. Anything :func:`repsim.data.as_grouped` takes (a torch
        ``Dataset`` such as ``TensorDataset(x, y, g)``, arrays...); inputs may be token ids or
        dicts of tensors.
    T, alpha, gamma : float
        Temperature and the weights of the soft and hard terms.
    attention : mapping or sequence of str, optional
        Student layer -> teacher layer pairs for attention transfer; a sequence means the same
        names in both.
    beta : float
        Weight of the attention-transfer term.
    p : float
        Exponent of the attention maps.
    epochs : int
        Training epochs.
    inplace : bool
        Train ``student`` itself rather than a copy.
    **fit_options
        Passed to :func:`repsim.train.fit` (``lr``, ``batch_size``, ``test``, ``seed``...).

    Returns
    -------
    (torch.nn.Module, FitResult)

    Raises
    ------
    ModelError
        If teacher and student have different output sizes.
    """
    if "loss" in fit_options:
        raise ConfigError("distill sets the loss itself; do not pass loss=.")
    if isinstance(data, GroupedDataset):
        fit_options.setdefault("test", data.test)
        data = data.train
    data = as_grouped(data, require_groups=False)
    teacher = unwrap_model(teacher)
    student = unwrap_model(student)
    if not inplace:
        student = clone_model(student)
    device = resolve_device(fit_options.get("device"))
    teacher.to(device).eval()
    student.to(device)
    x0 = inputs_to(data.inputs(slice(0, 2)), device)
    with torch.no_grad(), evaluating(student):
        t_out, s_out = model_logits(teacher, x0), model_logits(student, x0)
    if t_out.shape != s_out.shape:
        raise ModelError(
            f"Teacher outputs {tuple(t_out.shape[1:])} but student outputs "
            f"{tuple(s_out.shape[1:])}; distillation needs the same number of classes."
        )
    if attention is not None and not isinstance(attention, Mapping):
        attention = {name: name for name in attention}
    # the teacher is frozen and every hook removed however training ends
    with (
        frozen(teacher),
        DistillationLoss(
            teacher, T=T, alpha=alpha, gamma=gamma, attention=attention, beta=beta, p=p
        ) as loss,
    ):
        loss.attach(student)
        result = fit(student, data, epochs=epochs, loss=loss, **fit_options)
    return student, result
