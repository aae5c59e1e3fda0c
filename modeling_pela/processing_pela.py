"""PELA processor: UniHand-Mix samples -> model inputs (sequence layout of paper section 3 and appendix A.1).

One sample becomes (``K = tokens_per_chunk``; ids in the extended vocabulary of :mod:`configuration_pela`)::

    instruction | [<img>] image tokens x (image_seq_length * patches) [</img>] | <state_left> x K | <state_right> x K
    | <mot> A_1 </mot> | <mot> ... </mot> | ... | response + eos (motion_description only)

with a state block and chunks only for the hands present; at every time step the left-hand chunk precedes the
right-hand one (appendix A.1). ``A_i`` holds ``K`` motion ids (tokenizer id + ``motion_token_offset``; wrist slots then
finger slots), or ``[MASK]`` for video-only samples (no labels). Tasks (``task_type``):

* ``motion_generation``: every chunk is a target (``labels`` = its ids);
* ``motion_continuation``: the first ``context_chunks`` time steps are context, later chunks are targets
  (``first_target_chunk`` = the index of the first target chunk, for the collator's hybrid masking);
* ``motion_description``: chunks are context, the response text (+ eos) is the target;
* ``video_only``: chunks are all ``[MASK]``, no targets, ``is_labeled`` False (alignment only).

:meth:`PELAProcessor.encode` does not mask: the data collator draws the MCP mask (``trainers.masking.hybrid_chunk_mask`` over
``chunk_ids``), writes ``[MASK]`` (``mask_token_id``) into ``input_ids`` and keeps ``labels`` only where it masked.

Two entry points:

* ``processor(images=..., text=..., motion=None, hands=...)`` (transformers style) or ``processor(rows)`` (UniHand-Mix
  rows) returns exactly the model's inputs (:attr:`PELAProcessor.model_input_names`). Without motion (or with
  ``generation=True``) it is a generation prompt for ``generate_motion`` / ``get_predictive_embeddings``: ``input_ids``,
  ``attention_mask``, ``pixel_values`` and ``frame_pixel_values`` (or ``frame_features``), left-padded. With motion it
  is a training batch for ``model(**inputs)``: with the ``masked_chunk`` objective every motion token of a target chunk
  is replaced by ``[MASK]`` (MCP as in paper eq. 2; the hybrid masking of appendix A.3 is the data collator's job),
  with ``next_token`` the chunks stay intact (teacher forcing).
* :meth:`PELAProcessor.encode` (rows) returns the unmasked batch with the collator's fields, for
  ``trainers.collator.PELADataCollator``.

Fields (B samples, L tokens, N chunks, F boundary frames):

* ``input_ids`` (B, L) int64, ``attention_mask`` (B, L) int64, ``labels`` (B, L) int64 (-100 = not a target);
* ``chunk_ids`` (B, L) int64: chunk index of every motion position, -1 elsewhere;
* ``pixel_values`` (num_images, 3, H, W) float: the backbone image processor's output for the first frames;
* ``frame_pixel_values`` (B, F, 3, H', W') float (``frame_processor``) or ``frame_features`` (B, F, D) float
  (precomputed, without ``frame_processor``), zero-padded; frame 0 is the first frame;
* ``chunk_hands`` (B, N) int64 (0 left, 1 right, -1 padding) and ``chunk_frames`` (B, N) int64 (start boundary frame
  ``t`` of each chunk, whose end frame is ``t + 1``; -1 padding, and -1 where the sample has no end frame: no
  alignment for that chunk);
* ``is_labeled`` (B,) bool;
* ``first_target_chunk`` (B,) int64 (:meth:`encode` only): the smallest chunk the collator may pick as MCP target (the
  context size for continuation, the chunk count for description: none).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.video_processing_utils import BaseVideoProcessor

from .configuration_pela import (
    MOTION_SPECIAL_TOKENS,
    OBJECTIVES,
    MotionSpecialTokensMixin,
    PELAConfig,
    motion_vocabulary,
)
from .hand_motion import check_finite

# hand_motion's own import, named here because remote code copies one level of relative imports:
from .rotations import axis_angle_to_quaternion  # noqa: F401

HANDS = ("left", "right")
TASK_TYPES = ("motion_generation", "motion_description", "motion_continuation", "video_only")
TRAINING_INPUTS = ("labels", "chunk_ids", "chunk_hands", "chunk_frames", "is_labeled")
IGNORE_INDEX = -100


def _image(value: Any) -> Any:
    """One frame as a 3-channel image, whatever arrives: a datasets ``Image`` cell still encoded as
    ``{"bytes": ...}``, a PIL image of any mode PIL decodes (RGBA, LA, P, L, CMYK, I;16: what ``load_dataset`` gives
    for PNG frames) -> RGB; an (H, W), (H, W, 1) or (H, W, 4) array -> (H, W, 3) (alpha dropped, grey repeated)."""
    if isinstance(value, Mapping) and value.get("bytes") is not None:
        value = Image.open(io.BytesIO(value["bytes"]))
    if isinstance(value, Image.Image):
        if value.mode.startswith("I"):  # 16-bit grey (also when read as 32-bit "I"): scaled to 8 bits, not clipped
            array = np.asarray(value, dtype=np.float64)
            scale = 257.0 if array.max(initial=0) <= 65535 else array.max() / 255
            value = Image.fromarray(np.uint8(np.clip(np.round(array / scale), 0, 255)))
        elif value.mode == "F":  # float grey of unknown range: stretched to 8 bits
            array = np.asarray(value, dtype=np.float64)
            value = Image.fromarray(np.uint8(255 * (array - array.min()) / max(float(np.ptp(array)), 1e-12)))
        return value if value.mode == "RGB" else value.convert("RGB")
    if isinstance(value, np.ndarray) and value.ndim in (2, 3):
        if value.ndim == 2:
            value = value[..., None]
        if value.shape[-1] == 1:
            return np.repeat(value, 3, axis=-1)
        if value.shape[-1] == 4:
            return value[..., :3]
    return value


def motion_token_names(codebook_size: int) -> list[str]:
    """Token strings of the motion vocabulary in id order: ``<wrist_i>``, ``<finger_i>`` (i < ``codebook_size``), then
    :data:`~configuration_pela.MOTION_SPECIAL_TOKENS`."""
    codes = [f"<{part}_{i}>" for part in ("wrist", "finger") for i in range(codebook_size)]
    return [*codes, *MOTION_SPECIAL_TOKENS]


def add_motion_vocabulary(tokenizer: Any, motion_token_offset: int, codebook_size: int) -> None:
    """Make ``tokenizer`` know the motion vocabulary: :func:`motion_token_names` become special added tokens whose ids
    are the model's (``motion_token_offset`` + i), so ``decode`` shows ``<mot> <wrist_3> ...`` and ``len(tokenizer)``
    is the model's vocabulary. Ids between the tokenizer's own and the offset (rows the backbone's config reserves
    beyond its tokenizer) are filled with ``<|pela_reserved_i|>``. A tokenizer that already holds the vocabulary at
    those ids is left as it is. Raises ``ValueError`` if the tokenizer's own ids reach the offset, or if it holds
    motion tokens at other ids."""
    from tokenizers import AddedToken

    names = motion_token_names(codebook_size)
    vocab = tokenizer.get_vocab()
    present = {name: vocab[name] for name in names if name in vocab}
    if present:
        wrong = [name for i, name in enumerate(names) if present.get(name) != motion_token_offset + i]
        if wrong:
            raise ValueError(
                f"the tokenizer holds motion tokens at other ids than the model's (e.g. {wrong[0]!r}: "
                f"{present.get(wrong[0])}, expected {motion_token_offset + names.index(wrong[0])}): it was extended "
                "for another motion vocabulary; start from the backbone's own tokenizer"
            )
        return
    size = len(tokenizer)
    if size > motion_token_offset:
        raise ValueError(
            f"the tokenizer has {size} tokens but the model's text vocabulary ends at motion_token_offset="
            f"{motion_token_offset}: its ids from {motion_token_offset} on would be read as motion tokens"
        )
    fillers = [f"<|pela_reserved_{i}|>" for i in range(size, motion_token_offset)]
    tokenizer.add_tokens([AddedToken(name, special=True, normalized=False) for name in fillers + names])
    if tokenizer.convert_tokens_to_ids(names[0]) != motion_token_offset:
        raise ValueError(f"could not place the motion vocabulary at id {motion_token_offset} in {type(tokenizer)}")


class PELAProcessor(MotionSpecialTokensMixin, ProcessorMixin):
    """Builds PELA sequences (layout and outputs in the module docstring).

    Args:
        image_processor: the backbone's image processor (first frame -> ``pixel_values``).
        tokenizer: the backbone's text tokenizer (instruction and response; its ids must lie below
            ``motion_token_offset``); the motion vocabulary is added to it (:func:`add_motion_vocabulary`).
        frame_processor: the frame encoder's image processor for the boundary frames (a transformers image
            processor, or V-JEPA2's video processor given the frames as one clip; saved inside
            ``processor_config.json``); ``None`` when the model reads precomputed
            ``frame_features``.
        motion_token_offset / codebook_size / tokens_per_chunk / chunk_length / image_token_id: as in
            ``PELAConfig`` (use :meth:`from_model_config`).
        image_seq_length: backbone image tokens per image patch (InternVL: 256 at 448 px).
        image_start_token_id / image_end_token_id: optional ids wrapping the image tokens (InternVL ``<img>`` /
            ``</img>``).
        use_latent_state: insert the LSP state blocks (``PELAConfig.use_latent_state``).
        objective: the model's ``PELAConfig.objective``: how :meth:`__call__` builds training inputs.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        frame_processor: Any = None,
        motion_token_offset: int = 0,
        codebook_size: int = 4096,
        tokens_per_chunk: int = 128,
        chunk_length: int = 15,
        image_token_id: int = 0,
        image_seq_length: int = 256,
        image_start_token_id: int | None = None,
        image_end_token_id: int | None = None,
        use_latent_state: bool = True,
        objective: str = "masked_chunk",
        chat_template: str | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.motion_token_offset = motion_token_offset
        self.codebook_size = codebook_size
        self.tokens_per_chunk = tokens_per_chunk
        self.chunk_length = chunk_length
        self.image_token_id = image_token_id
        self.image_seq_length = image_seq_length
        self.image_start_token_id = image_start_token_id
        self.image_end_token_id = image_end_token_id
        self.use_latent_state = use_latent_state
        if isinstance(frame_processor, Mapping):  # reloaded from processor_config.json
            settings = dict(frame_processor)
            kind = "image_processor_type" if "image_processor_type" in settings else "video_processor_type"
            frame_processor = getattr(transformers, settings.pop(kind))(**settings)
        self.frame_processor = frame_processor
        if tokenizer is not None:
            add_motion_vocabulary(tokenizer, motion_token_offset, codebook_size)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @classmethod
    def from_model_config(
        cls, config: Any, image_processor: Any, tokenizer: Any, frame_processor: Any = None, **kwargs: Any
    ) -> PELAProcessor:
        """A processor matching a ``PELAConfig`` (token layout, image tokens per patch, latent state)."""
        return cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            frame_processor=frame_processor,
            motion_token_offset=config.motion_token_offset,
            codebook_size=config.codebook_size,
            tokens_per_chunk=config.tokens_per_chunk,
            chunk_length=config.chunk_length,
            image_token_id=config.image_token_id,
            image_seq_length=config.vlm_config.image_seq_length,
            use_latent_state=config.use_latent_state,
            objective=config.objective,
            **kwargs,
        )

    @classmethod
    def from_pretrained_components(
        cls,
        vlm_name_or_path: str,
        motion_tokenizer_name_or_path: str,
        frame_encoder_name_or_path: str | None = None,
        *,
        preset: str | None = None,
        **config_overrides: Any,
    ) -> PELAProcessor:
        """The processor of ``PELAForPretraining.from_pretrained_components(vlm_name_or_path,
        frame_encoder_name_or_path, **config_overrides)`` with the motion tokenizer's layout: the VLM's own tokenizer
        and image processor (``AutoProcessor``; InternVL's ``<img>`` / ``</img>`` wrap the image tokens), the frame
        encoder's image processor (V-JEPA2: its video processor; None: precomputed ``frame_features``), and the
        motion ids after the VLM's text vocabulary. Each argument is a Hub id or a local folder. Raises
        ``FileNotFoundError`` when a local VLM folder holds no processor, ``ValueError`` when the VLM has no tokenizer
        or image processor, or when its processor's image token is not the model config's ``image_token_id``."""
        from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoVideoProcessor

        try:
            vlm_processor = AutoProcessor.from_pretrained(vlm_name_or_path)
        except OSError as error:
            if not os.path.isdir(vlm_name_or_path):
                raise
            raise FileNotFoundError(
                f"{vlm_name_or_path} holds no processor of the VLM (tokenizer and image processor files such as "
                "preprocessor_config.json): put them in the folder (the VLM's Hub repository has them: "
                "AutoProcessor.from_pretrained(HUB_ID).save_pretrained(FOLDER)), or pass a saved PELAProcessor "
                "(PELAProcessor.from_pretrained(DIR), `pela pretrain --processor DIR`)"
            ) from error
        tokenizer = getattr(vlm_processor, "tokenizer", None)
        image_processor = getattr(vlm_processor, "image_processor", None)
        if tokenizer is None or image_processor is None:
            raise ValueError(
                f"{vlm_name_or_path!r} must hold the VLM's processor (tokenizer and image processor), got "
                f"{type(vlm_processor).__name__}"
            )
        layout = motion_vocabulary(AutoConfig.from_pretrained(motion_tokenizer_name_or_path, trust_remote_code=True))
        config = PELAConfig.from_components(
            AutoConfig.from_pretrained(vlm_name_or_path), preset=preset, **{**layout, **config_overrides}
        )
        image_token_id = getattr(vlm_processor, "image_token_id", config.image_token_id)
        if image_token_id != config.image_token_id:
            raise ValueError(
                f"the VLM's processor writes image token {image_token_id} but its config's image_token_id is "
                f"{config.image_token_id}: are {vlm_name_or_path!r}'s processor and model from the same checkpoint?"
            )
        frame_processor = None
        if frame_encoder_name_or_path:
            video = AutoConfig.from_pretrained(frame_encoder_name_or_path).model_type == "vjepa2"
            frame_processor = (AutoVideoProcessor if video else AutoImageProcessor).from_pretrained(
                frame_encoder_name_or_path
            )
        return cls.from_model_config(
            config, image_processor, tokenizer, frame_processor,
            image_start_token_id=getattr(vlm_processor, "start_image_token_id", None),
            image_end_token_id=getattr(vlm_processor, "end_image_token_id", None),
        )  # fmt: skip

    # -- one sample ----------------------------------------------------------------------------------------------

    def _motion_tokens(
        self, sample: Mapping[str, Any], hand: str, motion_tokenizer: Any, fingerprint: str | None = None
    ) -> torch.Tensor:
        """(num_chunks, K) tokenizer ids of one hand: precomputed ``motion_tokens_<hand>`` (refused if
        ``motion_tokens_model`` is not the given tokenizer's ``fingerprint``, computed here unless given) or encoded
        MANO."""
        where = f"sample {sample.get('id', '?')!r} ({hand} hand)"
        precomputed = sample.get(f"motion_tokens_{hand}")
        if precomputed is not None and len(precomputed):
            made_by = sample.get("motion_tokens_model") or ""
            if motion_tokenizer is not None and made_by != (fingerprint or motion_tokenizer.fingerprint()):
                fingerprint = fingerprint or motion_tokenizer.fingerprint()
                raise ValueError(
                    f"{where}: motion_tokens_{hand} were made by motion tokenizer {made_by or '(unrecorded)'!r}, not "
                    f"by the one given ({fingerprint!r}); re-run `pela data tokenize` with this "
                    "tokenizer, or drop the motion_tokens_* columns to tokenize the MANO labels on the fly"
                )
            tokens = torch.as_tensor(precomputed, dtype=torch.long)
        else:
            mano = sample.get(f"mano_{hand}")
            if mano is None:
                raise ValueError(f"{where}: has motion labels but neither motion_tokens_{hand} nor mano_{hand}")
            if motion_tokenizer is None:
                raise ValueError(f"{where}: MANO must be tokenized: pass motion_tokenizer= (a MotionTokenizerModel)")
            frames = torch.as_tensor(mano["global_orient"], dtype=torch.float32).shape[0]
            chunks = frames // self.chunk_length
            usable = chunks * self.chunk_length

            def chunked(field: str, width: int) -> torch.Tensor:
                values = torch.as_tensor(mano[field], dtype=torch.float32)[:usable]
                check_finite(values, f"mano_{hand}.{field}", where)  # a NaN would become a valid-looking token
                return values.reshape(chunks, self.chunk_length, width)

            tokens = motion_tokenizer.encode(
                chunked("hand_pose", 45), chunked("global_orient", 3), chunked("transl", 3), hand
            ).cpu()
        expected = (int(sample["num_chunks"]), self.tokens_per_chunk)
        if tuple(tokens.shape) != expected:
            raise ValueError(f"{where}: motion tokens have shape {tuple(tokens.shape)}, expected {expected}")
        half = self.tokens_per_chunk // 2
        wrist, finger = tokens[:, :half], tokens[:, half:]
        if bool(((wrist < 0) | (wrist >= self.codebook_size)).any()) or bool(
            ((finger < self.codebook_size) | (finger >= 2 * self.codebook_size)).any()
        ):
            raise ValueError(
                f"{where}: motion token ids out of range (wrist [0, {self.codebook_size}), finger "
                f"[{self.codebook_size}, {2 * self.codebook_size})): vocab/codebook mismatch with the tokenizer?"
            )
        return tokens

    def _frames(self, sample: Mapping[str, Any], generation: bool) -> dict[str, torch.Tensor]:
        """Boundary frames -> ``frame_pixel_values`` (F, 3, H, W) or ``frame_features`` (F, D). For generation only
        the first frame is needed."""
        if self.frame_processor is None:
            features = sample.get("frame_features")
            if features is None or not len(features):
                raise ValueError(
                    f"sample {sample.get('id', '?')!r}: no frame_processor and no precomputed frame_features"
                )
            features = torch.as_tensor(features, dtype=torch.float32)
            check_finite(features, "frame_features", f"sample {sample.get('id', '?')!r}")
            return {"frame_features": features[:1] if generation else features}
        frames = sample.get("boundary_frames") or []
        frames = [_image(frame) for frame in (frames[:1] if generation and frames else frames)]
        if not frames:
            frames = [_image(sample["first_frame"])]
        if isinstance(self.frame_processor, BaseVideoProcessor):  # V-JEPA2: the frames as one clip
            return {
                "frame_pixel_values": self.frame_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"][
                    0
                ]
            }
        processed = self.frame_processor(frames, return_tensors="pt")
        return {"frame_pixel_values": processed["pixel_values"]}

    def encode_sample(
        self,
        sample: Mapping[str, Any],
        motion_tokenizer: Any = None,
        generation: bool = False,
        *,
        tokenizer_fingerprint: str | None = None,
    ) -> dict[str, Any]:
        """One UniHand-Mix sample -> unpadded tensors (see the module docstring). With ``generation=True`` the
        sequence stops before the first generated chunk (the prompt of ``generate_motion``): motion continuation keeps
        its ``context_chunks`` time steps, the other tasks keep no chunk, and no labels are produced.
        ``tokenizer_fingerprint``: ``motion_tokenizer.fingerprint()`` when the caller has it (a batch computes it once:
        it walks the tokenizer's whole state), checked against the sample's precomputed tokens."""
        task = sample.get("task_type", "motion_generation")
        if task not in TASK_TYPES:
            raise ValueError(f"unknown task_type {task!r}; expected one of {TASK_TYPES}")
        hands = [hand for hand in HANDS if hand in (sample.get("hands") or [])]
        if not hands:
            raise ValueError(f"sample {sample.get('id', '?')!r}: 'hands' must name at least one of {HANDS}")
        num_steps = int(sample["num_chunks"])
        labeled = bool(sample.get("has_motion_labels", True)) and task != "video_only"
        context = int(sample.get("context_chunks") or 0) if task == "motion_continuation" else 0
        if generation:
            num_steps = context
        image = self.image_processor([_image(sample["first_frame"])], return_tensors="pt")
        pixel_values = image["pixel_values"]
        num_patches = int(image["num_patches"].sum()) if "num_patches" in image else pixel_values.shape[0]

        ids: list[int] = list(self.tokenizer(sample.get("instruction", ""), add_special_tokens=False)["input_ids"])
        if self.image_start_token_id is not None:
            ids.append(self.image_start_token_id)
        ids += [self.image_token_id] * (self.image_seq_length * num_patches)
        if self.image_end_token_id is not None:
            ids.append(self.image_end_token_id)
        if self.use_latent_state:
            for hand in hands:
                ids += [self.state_token_id(hand)] * self.tokens_per_chunk
        labels = [IGNORE_INDEX] * len(ids)
        chunk_ids = [-1] * len(ids)
        motion = (
            {hand: self._motion_tokens(sample, hand, motion_tokenizer, tokenizer_fingerprint) for hand in hands}
            if labeled and num_steps
            else {}
        )
        chunk_hands, chunk_frames = [], []
        for step in range(num_steps):
            for hand in hands:
                chunk = len(chunk_hands)
                if labeled:
                    tokens = (motion[hand][step] + self.motion_token_offset).tolist()
                else:
                    tokens = [self.mask_token_id] * self.tokens_per_chunk
                target = labeled and task in ("motion_generation", "motion_continuation") and step >= context
                ids += [self.mot_start_token_id, *tokens, self.mot_end_token_id]
                labels += [IGNORE_INDEX, *(tokens if target else [IGNORE_INDEX] * len(tokens)), IGNORE_INDEX]
                chunk_ids += [-1, *([chunk] * len(tokens)), -1]
                chunk_hands.append(HANDS.index(hand))
                chunk_frames.append(step)
        if task == "motion_description" and not generation:
            response = list(self.tokenizer(sample.get("response", ""), add_special_tokens=False)["input_ids"])
            if self.tokenizer.eos_token_id is not None:
                response.append(self.tokenizer.eos_token_id)
            ids += response
            labels += response
            chunk_ids += [-1] * len(response)
        if max(ids, default=0) >= self.motion_token_offset + 2 * self.codebook_size + len(MOTION_SPECIAL_TOKENS):
            raise ValueError("token ids beyond the extended vocabulary: is the processor configured for this model?")
        first_target = {"motion_continuation": len(hands) * context, "motion_description": len(chunk_hands)}.get(
            task, 0
        )
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "chunk_ids": torch.tensor(chunk_ids, dtype=torch.long),
            "pixel_values": pixel_values,
            "chunk_hands": torch.tensor(chunk_hands, dtype=torch.long),
            "chunk_frames": torch.tensor(chunk_frames, dtype=torch.long),
            "is_labeled": labeled,
            "first_target_chunk": first_target,
            **self._frames(sample, generation),
        }

    # -- batching ------------------------------------------------------------------------------------------------

    def collate(self, encoded: Sequence[dict[str, Any]], padding_side: str = "right") -> BatchFeature:
        """Pad a list of :meth:`encode_sample` outputs into a batch (``padding_side="left"`` for generation)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        length = max(item["input_ids"].numel() for item in encoded)

        def pad(values: torch.Tensor, size: int, fill: int | float) -> torch.Tensor:
            extra = values.new_full((size - values.shape[0], *values.shape[1:]), fill)
            return torch.cat([extra, values] if padding_side == "left" else [values, extra])

        batch: dict[str, Any] = {
            "input_ids": torch.stack([pad(item["input_ids"], length, pad_id) for item in encoded]),
            "attention_mask": torch.stack([pad(torch.ones_like(item["input_ids"]), length, 0) for item in encoded]),
            "labels": torch.stack([pad(item["labels"], length, IGNORE_INDEX) for item in encoded]),
            "chunk_ids": torch.stack([pad(item["chunk_ids"], length, -1) for item in encoded]),
            "pixel_values": torch.cat([item["pixel_values"] for item in encoded]),
            "is_labeled": torch.tensor([item["is_labeled"] for item in encoded], dtype=torch.bool),
            "first_target_chunk": torch.tensor([item["first_target_chunk"] for item in encoded], dtype=torch.long),
        }
        chunks = max(item["chunk_hands"].numel() for item in encoded)
        for key in ("chunk_hands", "chunk_frames"):
            batch[key] = torch.stack(
                [torch.cat([item[key], item[key].new_full((chunks - item[key].numel(),), -1)]) for item in encoded]
            )
        key = "frame_pixel_values" if "frame_pixel_values" in encoded[0] else "frame_features"
        frames = max(item[key].shape[0] for item in encoded)
        batch[key] = torch.stack(
            [
                torch.cat([item[key], item[key].new_zeros(frames - item[key].shape[0], *item[key].shape[1:])])
                for item in encoded
            ]
        )
        return BatchFeature(batch)

    def encode(
        self,
        samples: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        motion_tokenizer: Any = None,
        generation: bool = False,
        padding_side: str | None = None,
    ) -> BatchFeature:
        """UniHand-Mix rows -> the unmasked batch with every field of the module docstring (``first_target_chunk``
        included), what a data collator masks. ``motion_tokenizer`` encodes MANO when a row has no precomputed
        ``motion_tokens_*``; ``generation=True`` builds left-padded prompts."""
        if isinstance(samples, Mapping):
            samples = [samples]
        fingerprint = motion_tokenizer.fingerprint() if motion_tokenizer is not None and not generation else None
        encoded = [
            self.encode_sample(sample, motion_tokenizer, generation, tokenizer_fingerprint=fingerprint)
            for sample in samples
        ]
        return self.collate(encoded, padding_side or ("left" if generation else "right"))

    @property
    def model_input_names(self) -> list[str]:
        """Every key :meth:`__call__` can return (a prompt returns the first four, or ``frame_features``)."""
        frames = "frame_pixel_values" if self.frame_processor is not None else "frame_features"
        return ["input_ids", "attention_mask", "pixel_values", frames, *TRAINING_INPUTS]

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        motion: Any = None,
        *,
        hands: Sequence[str] | Sequence[Sequence[str]] | None = None,
        motion_tokenizer: Any = None,
        generation: bool | None = None,
        objective: str | None = None,
        padding_side: str | None = None,
    ) -> BatchFeature:
        """Model inputs, transformers style: ``model(**processor(images=, text=, motion=))`` trains,
        ``model.generate_motion(**processor(images=, text=))`` generates.

        Args:
            images: per sample its first frame (PIL image or (H, W, 3) uint8 array), or the list of its boundary
                frames ``[v_0, v_1, ..., v_N]`` (frame ``n`` starts chunk ``n``; needed for the alignment loss). A
                UniHand-Mix row (dict) or a list of rows may be given instead (then ``text``/``motion``/``hands``
                must be None).
            text: the instruction(s), one per sample.
            motion: None (a generation prompt), or per sample ``{hand: mano}`` with ``mano`` the MANO fields
                ``{"hand_pose": (T, 15, 3) or (T, 45), "global_orient": (T, 3), "transl": (T, 3)}`` in the camera frame
                (radians, metres; T a multiple of ``chunk_length``, encoded with ``motion_tokenizer``), or ``{hand:
                token ids (N, K)}`` from the motion tokenizer.
            hands: the sides of each sample (default: the keys of its motion, else both hands).
            motion_tokenizer: a ``MotionTokenizerModel`` for MANO motion.
            generation: force a prompt (True) or a training batch (False); default: a prompt iff there is no motion.
            objective: ``"masked_chunk"`` (target chunks fully ``[MASK]``ed) or ``"next_token"``; default: the
                processor's ``objective`` (the model's, see :meth:`from_model_config`).

        Returns a ``BatchFeature`` with exactly the model's inputs (module docstring). Raises ``ValueError`` naming
        the sample for inconsistent lengths, unknown hands or motion of the wrong shape."""
        objective = objective or self.objective
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        from_rows = _is_rows(images)
        if from_rows:
            if text is not None or motion is not None or hands is not None:
                raise ValueError("pass either UniHand-Mix rows or images=/text=/motion=/hands=, not both")
            rows = [images] if isinstance(images, Mapping) else list(images)
            generation = bool(generation)
        else:
            rows = self._rows_from_inputs(images, text, motion, hands)
            generation = motion is None if generation is None else generation
        batch = self.encode(rows, motion_tokenizer, generation, padding_side)
        if generation:
            return BatchFeature({key: batch[key] for key in self.model_input_names[:4] if key in batch})
        del batch["first_target_chunk"]
        if not from_rows:  # chunks without an end frame among the images given get no alignment
            frames = torch.tensor([len(row["boundary_frames"]) for row in rows])[:, None]
            batch["chunk_frames"] = batch["chunk_frames"].masked_fill(batch["chunk_frames"] + 1 >= frames, -1)
        if objective == "masked_chunk":
            targets = (batch["chunk_ids"] >= 0) & (batch["labels"] != IGNORE_INDEX)
            batch["input_ids"] = batch["input_ids"].masked_fill(targets, self.mask_token_id)
        return batch

    def _rows_from_inputs(self, images: Any, text: Any, motion: Any, hands: Any) -> list[dict[str, Any]]:
        """``images`` / ``text`` / ``motion`` / ``hands`` (see :meth:`__call__`) -> one UniHand-Mix row per sample."""
        if images is None or text is None:
            raise ValueError("PELAProcessor needs images= (first frame of each sample) and text= (its instruction)")
        texts = [text] if isinstance(text, str) else list(text)
        frames = [images] if not isinstance(images, (list, tuple)) else list(images)
        if len(texts) == 1 and len(frames) > 1 and not isinstance(frames[0], (list, tuple)):
            frames = [frames]  # one sample given its boundary frames
        motions = [motion] if motion is None or isinstance(motion, Mapping) else list(motion)
        if isinstance(hands, str):
            hands = list(HANDS) if hands == "both" else [hands]
        sides = [hands] if hands is None or (hands and isinstance(hands[0], str)) else list(hands)
        count = len(texts)
        for name, values in (("images", frames), ("motion", motions), ("hands", sides)):
            if len(values) == 1 and count > 1:
                values *= count
            if len(values) != count:
                raise ValueError(f"{name} has {len(values)} entries for {count} instructions (text)")
        rows = []
        for index, (instruction, sample_frames, sample_motion, sample_hands) in enumerate(
            zip(texts, frames, motions, sides, strict=True)
        ):
            sample_frames = list(sample_frames) if isinstance(sample_frames, (list, tuple)) else [sample_frames]
            sample_hands = list(sample_hands or (sample_motion or {}).keys() or HANDS)
            unknown = [hand for hand in sample_hands if hand not in HANDS]
            if unknown or not sample_hands:
                raise ValueError(f"sample {index}: hands must be a non-empty subset of {HANDS}, got {sample_hands}")
            row: dict[str, Any] = {
                "id": f"sample-{index}", "instruction": instruction, "hands": sample_hands, "task_type":
                "motion_generation", "first_frame": sample_frames[0], "boundary_frames": sample_frames,
                "num_chunks": 0, "has_motion_labels": sample_motion is not None,
            }  # fmt: skip
            if sample_motion is not None:
                missing = [hand for hand in sample_hands if hand not in sample_motion]
                if missing:
                    raise ValueError(f"sample {index}: motion has no {missing} hand (motion keys are the hands)")
                counts = set()
                for hand in sample_hands:
                    value = sample_motion[hand]
                    if isinstance(value, Mapping):
                        frames_of_hand = len(value["global_orient"])
                        if frames_of_hand % self.chunk_length:
                            raise ValueError(
                                f"sample {index} ({hand} hand): {frames_of_hand} MANO frames is not a multiple of "
                                f"chunk_length {self.chunk_length}"
                            )
                        counts.add(frames_of_hand // self.chunk_length)
                        row[f"mano_{hand}"] = value
                    else:
                        tokens = torch.as_tensor(value, dtype=torch.long)
                        tokens = tokens[None] if tokens.dim() == 1 else tokens
                        counts.add(tokens.shape[0])
                        row[f"motion_tokens_{hand}"] = tokens
                if len(counts) != 1:
                    raise ValueError(f"sample {index}: the hands' motions have different numbers of chunks {counts}")
                row["num_chunks"] = counts.pop()
            rows.append(row)
        return rows


def _is_rows(value: Any) -> bool:
    """Whether ``value`` is a UniHand-Mix row (a dict) or a non-empty list of rows."""
    if isinstance(value, Mapping):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], Mapping)


PELAProcessor.register_for_auto_class()

__all__ = ["PELAProcessor"]
