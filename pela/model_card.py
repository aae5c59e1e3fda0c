"""The model card of a pretrained PELA checkpoint (``hub_cards/pela_model_card.md``), and its re-rendering with
``pela eval --update-card`` results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_pela import PELAForPretraining

from .variants import VARIANTS

CARD_SETTINGS = "pela_card.json"  # what the model card was rendered with (pela eval --update-card re-renders it)


def update_model_card(checkpoint: str | Path, metrics: Mapping[str, Mapping[str, float]]) -> Path:
    """Re-render the checkpoint's ``README.md`` with ``metrics`` (``{split: {"mpjpe", ...}}``, as ``pela eval``
    returns them) in its results table and model-index, keeping the settings it was written with."""
    checkpoint = Path(checkpoint)
    settings_path = checkpoint / CARD_SETTINGS
    settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    settings["metrics"] = {split: dict(values) for split, values in metrics.items()}
    kinematics = {values.get("kinematics") for values in metrics.values()} - {None}
    if kinematics:
        settings["kinematics"] = kinematics.pop()
    model = PELAForPretraining.from_pretrained(str(checkpoint))
    pretraining_model_card(model, **settings).save(str(checkpoint / "README.md"))
    settings_path.write_text(json.dumps(settings, indent=2))
    return checkpoint / "README.md"


def pretraining_model_card(
    model: PELAForPretraining,
    repo_id: str = "<org>/<pela-model>",
    dataset: str | None = None,
    training: str | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    kinematics: str = "builtin",
    license: str = "apache-2.0",
    data_skipped: Mapping[str, int] | None = None,
) -> ModelCard:
    """Render ``hub_cards/pela_model_card.md`` for a pretrained PELA model (``metrics``: ``{split: {"mpjpe", ...}}``
    as ``pela eval`` writes them; ``data_skipped``: training rows skipped as unusable, by reason)."""
    config = model.config
    variant = next(
        (name for name, v in VARIANTS.items() if (v["objective"], v["align"]) == (config.objective, config.align)),
        "custom",
    )
    hub_dataset = dataset if dataset and not Path(dataset).exists() else None
    base_model = getattr(config.vlm_config, "_name_or_path", "") or None
    if base_model and Path(base_model).exists():
        base_model = None  # a local folder is not a Hub id
    eval_results = [
        EvalResult(
            task_type="hand-motion-generation",
            task_name="Hand motion generation (first chunk)",
            dataset_type=hub_dataset or "unihand-mix",
            dataset_name=f"UniHand-Mix {split}",
            dataset_config=split,
            dataset_split="test",
            metric_type=metric,
            metric_name=f"{metric.upper().replace('_', '-')} (cm)",
            metric_value=round(float(m[metric]), 4),
        )  # fmt: skip
        for split, m in (metrics or {}).items()
        for metric in ("mpjpe", "pa_mpjpe", "mwte", "mde")
        if metric in m
    ]
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="robotics", datasets=[hub_dataset] if hub_dataset
        else None, tags=["pela", "vla", "hand-motion", "robotics", "custom_code"], model_name=repo_id,
        base_model=base_model, eval_results=eval_results or None,
    )  # fmt: skip
    text = config.vlm_config.text_config
    frame = config.frame_encoder_config
    template = files("hub_cards").joinpath("pela_model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=repo_id,
        repo_id=repo_id,
        variant=variant,
        objective=config.objective,
        align=config.align,
        align_layer=config.align_layer,
        backbone=f"`{config.vlm_config.model_type}`, language model {text.num_hidden_layers} layers x {text.hidden_size}",
        frame_encoder=f"`{frame.model_type}` (frozen)" if frame is not None else "precomputed frame features",
        codebook_size=config.codebook_size,
        tokens_per_chunk=config.tokens_per_chunk,
        chunk_length=config.chunk_length,
        dataset_text=f"`{dataset}`" if dataset else "not recorded",
        training=training,
        metrics=dict(metrics or {}),
        kinematics=kinematics,
        license=license,
        data_skipped=dict(data_skipped or {}),
    )
