"""Training checkpoints: a run saved after every epoch and resumed exactly where it stopped.

Taught in ``04_training.ipynb`` (used by :func:`vgg_utils.train` through its ``checkpoint`` and
``resume`` arguments). A checkpoint holds the model, the optimiser, the schedule, every random
generator's state and the history so far, so a resumed run continues like an uninterrupted one;
:func:`load_checkpoint` refuses files that are unreadable, foreign, or from another model or run,
with a message that says what differs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

_FORMAT = "vgg_utils.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: unreadable, or saved from a different model or run."""


def _rng_state(sampler: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "sampler": sampler.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _save(path, model, optimizer, scheduler, sampler, augment, settings, epoch, history) -> None:
    state = {
        "format": _FORMAT,
        "epoch": epoch,
        "settings": settings,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": {col: [row[col] for row in history] for col in history[0]},  # rows: dicts, same keys
        "rng": _rng_state(sampler),
        "augment": augment.state_dict() if hasattr(augment, "state_dict") else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves half a checkpoint


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None) -> dict:
    """Read a checkpoint written by :func:`train` (``weights_only=True``) and check it.

    With ``model``, also load its weights (strictly; a different architecture raises
    :class:`CheckpointError` listing what differs). Returns the checkpoint dict: ``epoch``,
    ``settings``, ``history`` (dict of lists: ``pd.DataFrame(ckpt["history"])``), ``model``, ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, truncated file, foreign pickle: all unreadable
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "the file is corrupt or not a torch checkpoint: delete it to train from scratch"
        ) from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a vgg_utils training checkpoint (no {_FORMAT!r} marker)")
    if model is not None:
        _load_model_state(path, model, state["model"])
    return state


def _load_model_state(path: Path, model: nn.Module, saved: dict) -> None:
    current = model.state_dict()
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(v.shape)}"
        for k, v in current.items()
        if k in saved and saved[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {path} was saved from a different architecture than this model:"]
        if shapes:
            lines.append(f"  {len(shapes)} shape mismatches, e.g. " + "; ".join(shapes[:3]))
        if missing:
            lines.append(f"  {len(missing)} tensors missing from the checkpoint, e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"  {len(unexpected)} tensors the model lacks, e.g. {unexpected[:3]}")
        lines.append("  build the model with the same config/width/batch_norm/head, or delete the file")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(saved)


def _load_for_resume(path, model, optimizer, scheduler, sampler, augment, settings, epochs) -> dict:
    state = load_checkpoint(path, model)
    if state["epoch"] > epochs:
        raise CheckpointError(f"checkpoint {path} is at epoch {state['epoch']}, beyond epochs={epochs}")
    saved = state["settings"]
    changed = [f"{k}={saved.get(k)!r} (now {v!r})" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run: it was saved with {', '.join(changed)}; "
            "resume with the same settings, or delete the file to start over"
        )
    if settings["schedule"] == "onecycle" and scheduler.total_steps != state["scheduler"]["total_steps"]:
        raise CheckpointError(
            f"checkpoint {path} is a one-cycle run planned for a different number of epochs; "
            "a one-cycle schedule cannot be extended: train with the same epochs"
        )
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    sampler.set_state(rng["sampler"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "mps" in rng and torch.backends.mps.is_available():
        torch.mps.set_rng_state(rng["mps"])
    if state["augment"] is not None and hasattr(augment, "load_state_dict"):
        augment.load_state_dict(state["augment"])
    history = [dict(zip(state["history"], values, strict=True)) for values in zip(*state["history"].values(), strict=True)]
    return {"history": history, "epoch": state["epoch"]}
