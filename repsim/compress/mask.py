"""Pruning masks as data: ``{parameter_name: bool tensor}`` with file I/O, apply and bake.

A :class:`Mask` maps a parameter's dotted name (``"features.conv1.weight"``) to a boolean tensor
of the parameter's shape, ``True`` where the weight is kept. It is saved as ``PATH.safetensors``
(the boolean tensors) next to ``PATH.json`` (a sparsity report, the fingerprint of the model it
came from, and a format version), applied with ``torch.nn.utils.prune.custom_from_mask`` and
made permanent with ``torch.nn.utils.prune.remove`` (:func:`bake`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from repsim._core.fingerprints import model_fingerprint, unwrap_model
from repsim._core.io import read_tensor_pair, tensor_pair_paths, write_tensor_pair
from repsim.errors import MaskError, MaskKeyError, did_you_mean

FORMAT_VERSION = 1


def _split(name: str) -> tuple[str, str]:
    module, _, tensor = name.rpartition(".")
    return module, tensor


def _current_tensor(module: nn.Module, tensor: str) -> torch.Tensor | None:
    """The parameter ``tensor`` of ``module`` (its ``_orig`` when pruned), or ``None``."""
    params = dict(module.named_parameters(recurse=False))
    return params.get(tensor + "_orig", params.get(tensor))


class Mask(Mapping[str, torch.Tensor]):
    """A pruning mask: parameter name -> boolean keep-tensor.

    Parameters
    ----------
    entries : mapping of str to tensor
        Boolean tensors (or 0/1 tensors, converted) keyed by parameter name.
    fingerprint : str, optional
        Fingerprint of the model the mask was taken from (saved with it, for provenance).

    Raises
    ------
    MaskError
        If a tensor holds values other than 0/1.
    """

    def __init__(
        self, entries: Mapping[str, torch.Tensor], *, fingerprint: str | None = None
    ) -> None:
        self._entries: dict[str, torch.Tensor] = {}
        for name, value in entries.items():
            t = torch.as_tensor(value).detach().to("cpu")
            if t.dtype != torch.bool:
                if not bool(((t == 0) | (t == 1)).all()):
                    raise MaskError(
                        f"Mask entry {name!r} holds values other than 0/1; a mask is boolean "
                        "(True = keep the weight)."
                    )
                t = t.to(torch.bool)
            self._entries[str(name)] = t.contiguous()
        self.fingerprint = fingerprint

    # Mapping protocol
    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self._entries[key]
        except KeyError:
            raise MaskKeyError(
                f"The mask has no entry {key!r}." + did_you_mean(key, self._entries)
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        rep = self.sparsity()
        return (
            f"Mask({len(self)} tensors, sparsity={rep['sparsity']:.4f}, "
            f"fingerprint={self.fingerprint!r})"
        )

    # Construction
    @classmethod
    def from_model(cls, model: nn.Module) -> Mask:
        """The masks of every pruned tensor of ``model`` (its ``*_mask`` buffers).

        Raises
        ------
        MaskError
            If the model carries no pruning mask.
        """
        model = unwrap_model(model)
        entries: dict[str, torch.Tensor] = {}
        for mod_name, module in model.named_modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, tprune.BasePruningMethod):
                    tensor = hook._tensor_name
                    name = f"{mod_name}.{tensor}" if mod_name else tensor
                    entries[name] = getattr(module, tensor + "_mask").detach().to(torch.bool)
        if not entries:
            raise MaskError(
                "The model carries no pruning mask; prune it first "
                "(repsim.compress.prune) or build a Mask from a dict."
            )
        return cls(entries, fingerprint=model_fingerprint(model))

    # Reports
    def sparsity(self) -> dict[str, object]:
        """Share of masked-out entries, per tensor and overall.

        Returns
        -------
        dict
            ``{"sparsity", "n_zero", "n_total", "layers": {name: {"n_zero", "n_total",
            "sparsity"}}}``; ``sparsity`` is ``n_zero / n_total`` (NaN for an empty mask).
        """
        layers = {}
        n_zero = n_total = 0
        for name, t in self._entries.items():
            z, n = int((~t).sum()), int(t.numel())
            layers[name] = {"n_zero": z, "n_total": n, "sparsity": z / n if n else float("nan")}
            n_zero += z
            n_total += n
        return {
            "sparsity": n_zero / n_total if n_total else float("nan"),
            "n_zero": n_zero,
            "n_total": n_total,
            "layers": layers,
        }

    # Checking against a model
    def check(self, model: nn.Module) -> None:
        """Raise :class:`MaskError` unless every entry names a parameter of ``model`` of its shape."""
        model = unwrap_model(model)
        modules = dict(model.named_modules())
        known = [n[:-5] if n.endswith("_orig") else n for n, _ in model.named_parameters()]
        for name, t in self._entries.items():
            mod_name, tensor = _split(name)
            module = modules.get(mod_name)
            current = None if module is None else _current_tensor(module, tensor)
            if current is None:
                raise MaskError(
                    f"Mask entry {name!r} names no parameter of the model."
                    + did_you_mean(name, known)
                    + " Masks only fit the architecture they were taken from."
                )
            if tuple(current.shape) != tuple(t.shape):
                raise MaskError(
                    f"Mask entry {name!r} has shape {tuple(t.shape)} but the parameter has shape "
                    f"{tuple(current.shape)}; the mask was made for another architecture."
                )

    def apply(self, model: nn.Module) -> nn.Module:
        """Prune ``model`` in place with these masks (``custom_from_mask``) and return it.

        A tensor that is already pruned keeps its mask and gets the logical AND of both (torch's
        ``PruningContainer``). Entries are checked first, so a mask that does not fit changes
        nothing.
        """
        model = unwrap_model(model)
        self.check(model)
        modules = dict(model.named_modules())
        for name, t in self._entries.items():
            mod_name, tensor = _split(name)
            module = modules[mod_name]
            tprune.custom_from_mask(module, tensor, t.to(_current_tensor(module, tensor).device))
        return model

    # Files
    def save(self, path: str | os.PathLike, **extra: object) -> Path:
        """Write ``PATH.safetensors`` (boolean tensors) and ``PATH.json`` (report, fingerprint).

        Both files are written under unique temporary names and renamed
        (:func:`repsim._core.io.write_tensor_pair`). Returns the ``.safetensors`` path.

        Raises
        ------
        OutputError
            If the files cannot be written.
        """
        info = {
            "format": "repsim.Mask",
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "names": list(self._entries),
            "report": self.sparsity(),
            **extra,
        }
        return write_tensor_pair(self._entries, info, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mask:
        """Read a mask written by :meth:`save`.

        Raises
        ------
        MaskError
            If the files are missing, damaged or are not a repsim mask. ``PATH.json`` is
            optional: without it the mask has no fingerprint.
        """
        tensors, info = read_tensor_pair(
            path, what="mask", hint="save one with Mask.save", error=MaskError, need_info=False
        )
        fingerprint, order = None, []
        if info is not None:
            if info.get("format") != "repsim.Mask":
                _, meta = tensor_pair_paths(path)
                raise MaskError(f"{meta} is not a repsim mask report.")
            fingerprint, order = info.get("fingerprint"), info.get("names", [])
        names = [n for n in order if n in tensors] + [n for n in tensors if n not in order]
        return cls({n: tensors[n] for n in names}, fingerprint=fingerprint)


def bake(model: nn.Module) -> nn.Module:
    """Make pruning permanent (``torch.nn.utils.prune.remove``) in place and return the model.

    Each pruned ``weight`` becomes a plain parameter holding ``weight_orig * weight_mask``, the
    ``_orig``/``_mask`` entries and the pruning hooks disappear, and the state dict loads into a
    model that was never pruned. Zeros are then no longer enforced during training.
    """
    model = unwrap_model(model)
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(module, hook._tensor_name)
    return model
