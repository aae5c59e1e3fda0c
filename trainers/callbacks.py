"""Trainer callbacks for PELA pretraining."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState


class PerceiverEMACallback(TrainerCallback, ExportableState):
    """Calls ``model.ema_update()`` after every optimiser step (the decoupled perceiver EMA, paper eqs. 6-7, and the
    running statistics of the latent standardisation).

    The EMA'd parameters live in the model (saved with its weights); the callback's own state (the number of updates
    done) goes into ``trainer_state.json`` and is restored with ``restore_callback_states_from_checkpoint=True``.
    Only real optimiser steps count: with gradient accumulation the update runs once per accumulated step.
    """

    def __init__(self, num_updates: int = 0) -> None:
        self.num_updates = num_updates

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        if model is None:
            raise ValueError("PerceiverEMACallback needs the model; it is passed by transformers.Trainer")
        module = getattr(model, "module", model)  # DistributedDataParallel
        if not hasattr(module, "ema_update"):
            raise TypeError(f"PerceiverEMACallback: {type(module).__name__} has no ema_update()")
        module.ema_update()
        self.num_updates += 1

    def state(self) -> dict:
        return {"args": {"num_updates": self.num_updates}, "attributes": {}}
