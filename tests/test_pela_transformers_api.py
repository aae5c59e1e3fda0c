"""transformers calling conventions: ``model(**processor(images=, text=, motion=))`` trains,
``model.generate_motion(**processor(images=, text=))`` generates, the processor returns exactly model inputs, and the
model refuses MCP targets that were left visible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pela_testing import (
    CODEBOOK,
    K,
    random_image,
    save_tiny_vlm_and_frame_encoder,
    single_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_processor,
)
from remote_code import run_without_project

from modeling_pela import HandMotion, MotionTokenizerConfig, MotionTokenizerModel

PROMPT_KEYS = {"input_ids", "attention_mask", "pixel_values", "frame_pixel_values"}


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def processor(model):
    return tiny_processor(model.config)


def random_mano(seed: int, frames: int = 15) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "hand_pose": rng.normal(size=(frames, 15, 3)) * 0.2,
        "global_orient": rng.normal(size=(frames, 3)),
        "transl": rng.normal(size=(frames, 3)) * 0.1 + [0, 0, 0.5],
    }


@pytest.fixture(scope="module")
def motion_tokenizer():
    torch.manual_seed(0)
    tokenizer = MotionTokenizerModel(
        MotionTokenizerConfig(codebook_size=CODEBOOK, encoder_width=16, decoder_width=16, latent_dim=16)
    ).eval()
    motions = [
        HandMotion(
            side, *(torch.as_tensor(mano[k], dtype=torch.float32) for k in ("hand_pose", "global_orient", "transl"))
        )
        for side, mano in (("right", random_mano(0, 30)), ("left", random_mano(1, 30)))
    ]
    tokenizer.fit_normalization(motions)
    tokenizer.init_codebooks(motions)
    return tokenizer


def test_processor_output_is_exactly_the_training_inputs_and_the_model_trains_on_it(model, processor, motion_tokenizer):
    rng = np.random.default_rng(0)
    image = random_image(rng)
    mano = random_mano(2)
    inputs = processor(images=image, text="pick up a cup", motion={"right": mano}, motion_tokenizer=motion_tokenizer)
    assert set(inputs) <= set(processor.model_input_names) and "first_target_chunk" not in inputs
    motion = inputs["chunk_ids"] >= 0
    assert int(motion.sum()) == K
    assert bool((inputs["input_ids"][motion] == model.config.mask_token_id).all())  # MCP: the target chunk masked
    motion_obj = HandMotion(
        "right", *(torch.as_tensor(mano[k], dtype=torch.float32) for k in ("hand_pose", "global_orient", "transl"))
    )
    expected = motion_tokenizer.encode_motion(motion_obj)[0] + model.config.motion_token_offset
    assert torch.equal(inputs["labels"][motion], expected)
    assert inputs["chunk_frames"].tolist() == [[-1]]  # one image: no end frame, so no alignment for the chunk
    output = model.train()(**inputs)
    model.eval()
    assert output.mcp_loss is not None and output.align_loss is None
    torch.testing.assert_close(output.loss, output.mcp_loss)
    output.loss.backward()
    model.zero_grad()

    frames = [random_image(rng), random_image(rng)]  # boundary frames v_0, v_1: the chunk is aligned
    aligned = processor(images=frames, text="pick up a cup", motion={"right": mano}, motion_tokenizer=motion_tokenizer)
    assert aligned["chunk_frames"].tolist() == [[0]] and aligned["frame_pixel_values"].shape[:2] == (1, 2)
    with torch.no_grad():
        assert model(**aligned).align_loss is not None


def test_next_token_inputs_stay_intact_and_token_ids_are_accepted(processor):
    rng = np.random.default_rng(3)
    tokens = np.concatenate(
        [rng.integers(0, CODEBOOK, (1, K // 2)), rng.integers(CODEBOOK, 2 * CODEBOOK, (1, K // 2))], 1
    )
    inputs = processor(images=random_image(rng), text="open drawer", motion={"left": tokens}, objective="next_token")
    motion = inputs["chunk_ids"] >= 0
    offset = processor.motion_token_offset
    assert torch.equal(inputs["input_ids"][motion], torch.as_tensor(tokens[0]) + offset)  # teacher forcing
    assert torch.equal(inputs["labels"][motion], inputs["input_ids"][motion])
    next_token = tiny_model(seed=2, objective="next_token", align=False)
    with torch.no_grad():
        assert next_token(**inputs).mcp_loss is not None


def test_generate_motion_from_a_processor_prompt(model, processor, motion_tokenizer):
    rng = np.random.default_rng(4)
    prompt = processor(images=[random_image(rng), random_image(rng)], text=["pick up a cup", "push block"])
    assert set(prompt) == PROMPT_KEYS and prompt["input_ids"].shape[0] == 2
    output = model.generate_motion(**prompt, motion_tokenizer=motion_tokenizer, decode_ratio=0.5)
    assert output.hands == ("left", "right") and output.motion_tokens.shape == (2, 1, 2, K)
    assert output.mano["right"]["transl"].shape == (2, 15, 3)
    right = processor(images=random_image(rng), text="pick up a cup", hands="right")
    assert model.generate_motion(**right, decode_ratio=0.5).hands == ("right",)


def test_predictive_embeddings_from_a_processor_prompt(model, processor):
    """``processor(images=, text=)`` -> the prompt followed by one all-[MASK] chunk per hand, as the LeRobot policy
    builds it."""
    config = model.config
    rng = np.random.default_rng(9)
    prompt = processor(images=random_image(rng), text="pick up a cup")
    chunk = [config.mot_start_token_id] + [config.mask_token_id] * K + [config.mot_end_token_id]
    chunks = torch.tensor([chunk * 2])
    explicit = {
        **prompt,
        "input_ids": torch.cat([prompt["input_ids"], chunks], 1),
        "attention_mask": torch.cat([prompt["attention_mask"], torch.ones_like(chunks)], 1),
    }
    with torch.no_grad():
        output = model.get_predictive_embeddings(**prompt)
        expected = model.get_predictive_embeddings(**explicit)
        right = model.get_predictive_embeddings(**processor(images=random_image(rng), text="push", hands="right"))
    assert output.predictive_embeddings.shape == (1, 2, K, config.hidden_size) and bool(output.chunk_mask.all())
    torch.testing.assert_close(output.predictive_embeddings, expected.predictive_embeddings)
    assert right.predictive_embeddings.shape == (1, 1, K, config.hidden_size)
    with pytest.raises(ValueError, match="already hold their motion chunks"):
        model.get_predictive_embeddings(**explicit, hands="right")


def test_the_model_refuses_visible_mcp_targets(model, processor):
    rng = np.random.default_rng(5)
    tokens = np.concatenate(
        [rng.integers(0, CODEBOOK, (1, K // 2)), rng.integers(CODEBOOK, 2 * CODEBOOK, (1, K // 2))], 1
    )
    leaked = processor(images=random_image(rng), text="pick up a cup", motion={"right": tokens}, objective="next_token")
    with pytest.raises(ValueError, match="not \\[MASK\\].*copy"):
        model(**leaked)


def test_processor_errors_name_the_sample_and_field(processor):
    rng = np.random.default_rng(6)
    image = random_image(rng)
    with pytest.raises(ValueError, match="images has 2 entries for 3 instructions"):
        processor(images=[image, image], text=["a", "b", "c"])
    with pytest.raises(
        ValueError, match="sample 0 \\(right hand\\): 20 MANO frames is not a multiple of chunk_length 15"
    ):
        processor(images=image, text="a", motion={"right": random_mano(0, 20)})
    with pytest.raises(ValueError, match="sample 0: hands must be"):
        processor(images=image, text="a", hands=["middle"])
    with pytest.raises(ValueError, match="not both"):
        processor([{"instruction": "a"}], text="a")


def test_hand_motion_generation_pipeline_in_a_fresh_process(model, processor, motion_tokenizer, tmp_path):
    from pela.checkpoints import save_pretraining_checkpoint

    folder = save_pretraining_checkpoint(tmp_path / "checkpoint", model, processor, motion_tokenizer)
    image = random_image(np.random.default_rng(7))
    image.save(tmp_path / "scene.png")
    prompt = processor(images=image, text="pick up a cup", hands="right")
    expected = model.generate_motion(
        **prompt, num_ensembles=2, ensemble_method="mean", generator=torch.Generator().manual_seed(3),
        motion_tokenizer=motion_tokenizer,
    ).mano["right"]  # fmt: skip
    script = f"""
        import numpy as np
        from PIL import Image
        from transformers import pipeline
        generate = pipeline("hand-motion-generation", model={str(folder)!r}, trust_remote_code=True)
        assert type(generate).__module__.startswith("transformers_modules."), type(generate).__module__
        motion = generate(Image.open("scene.png"), "pick up a cup", hands="right", num_ensembles=2, seed=3)
        np.savez("motion.npz", **motion["right"])
        print("HANDS=" + ",".join(motion))
        """
    result = run_without_project(script, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split("HANDS=")[-1].strip() == "right"
    motion = np.load(tmp_path / "motion.npz")
    assert motion["keypoints"].shape == (15, 21, 3) and motion["hand_pose"].shape == (15, 15, 3)
    for name in ("hand_pose", "global_orient", "transl"):
        np.testing.assert_allclose(motion[name], expected[name][0].numpy(), atol=1e-5)
    wrist = motion["keypoints"][:, 0]
    np.testing.assert_allclose(wrist, motion["transl"], atol=0.2)  # keypoints in metres, around the wrist position


def entry_modules(folder: Path) -> list[Path]:
    """The files of every class a ``config.json`` / ``processor_config.json`` auto_map or a custom pipeline names, in
    ``folder`` and its subfolders: the files transformers' remote code starts from."""
    files = set()
    for config in [*folder.rglob("config.json"), *folder.rglob("processor_config.json")]:
        content = json.loads(config.read_text())
        references = [*content.get("auto_map", {}).values()]
        references += [task["impl"] for task in content.get("custom_pipelines", {}).values()]
        files |= {config.parent / (reference.split(".")[0] + ".py") for reference in references}
    return sorted(files)


def test_every_remote_code_entry_module_imports_its_whole_import_graph(model, processor, motion_tokenizer, tmp_path):
    """transformers copies, for a local folder, only the relative imports named in the entry module itself."""
    from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

    from pela.checkpoints import save_pretraining_checkpoint

    folder = save_pretraining_checkpoint(tmp_path / "checkpoint", model, processor, motion_tokenizer)
    modules = entry_modules(folder)
    assert {path.name for path in modules} >= {"processing_pela.py", "modeling_pela.py", "pipeline_pela.py",
                                              "modeling_motion_tokenizer.py"}  # fmt: skip
    for module in modules:
        needed = {Path(path).stem for path in get_relative_import_files(module)}
        assert needed <= set(get_relative_imports(module)), (module.name, needed - set(get_relative_imports(module)))


@pytest.mark.parametrize(
    "load",
    [
        "AutoProcessor.from_pretrained(FOLDER, trust_remote_code=True)",
        "AutoModel.from_pretrained(FOLDER + '/motion_tokenizer', trust_remote_code=True)",
    ],
    ids=["processor", "motion_tokenizer"],
)
def test_remote_code_entry_point_loads_alone_in_a_fresh_process(load, model, processor, motion_tokenizer, tmp_path):
    from pela.checkpoints import save_pretraining_checkpoint

    folder = save_pretraining_checkpoint(tmp_path / "checkpoint-hyphen-2", model, processor, motion_tokenizer)
    script = f"""
        from transformers import AutoModel, AutoProcessor
        FOLDER = {str(folder)!r}
        loaded = {load}
        assert type(loaded).__module__.startswith("transformers_modules."), type(loaded).__module__
        print("LOADED=" + type(loaded).__name__)
        """
    result = run_without_project(script, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split("LOADED=")[-1].strip() in {"PELAProcessor", "MotionTokenizerModel"}


def test_processor_and_model_from_pretrained_components(tmp_path, motion_tokenizer):
    """A VLM folder as a Hub checkpoint holds it (InternVL weights + processor with <img> / </img> / <IMG_CONTEXT>),
    a frame encoder folder and a motion tokenizer folder -> a matching processor and model that train and generate."""
    from transformers import AutoTokenizer

    from modeling_pela import PELAForPretraining, PELAProcessor
    from modeling_pela.processing_pela import add_motion_vocabulary

    words = save_tiny_vlm_and_frame_encoder(tmp_path / "vlm", tmp_path / "dino")
    motion_tokenizer.save_pretrained(tmp_path / "motion")

    processor = PELAProcessor.from_pretrained_components(
        str(tmp_path / "vlm"), str(tmp_path / "motion"), str(tmp_path / "dino"), preset="tiny"
    )
    layout = {"codebook_size": CODEBOOK, "tokens_per_chunk": K, "num_latent_queries": K, "chunk_length": 15}
    model = PELAForPretraining.from_pretrained_components(
        str(tmp_path / "vlm"), str(tmp_path / "dino"), preset="tiny", **layout
    ).eval()
    assert processor.motion_token_offset == model.config.motion_token_offset == 256
    assert processor.mask_token_id == model.config.mask_token_id
    # the VLM's tokenizer now knows the motion vocabulary at the model's ids, and nothing else moved
    tokenizer = processor.tokenizer
    assert len(tokenizer) == model.config.vlm_config.text_config.vocab_size == 256 + 2 * CODEBOOK + 5
    assert tokenizer.convert_tokens_to_ids(["<wrist_0>", "<finger_0>", "[MASK]"]) == [
        256,
        256 + CODEBOOK,
        model.config.mask_token_id,
    ]
    assert [tokenizer.convert_tokens_to_ids(word) for word in words] == list(range(len(words)))
    rng = np.random.default_rng(8)
    prompt = processor(images=random_image(rng), text="pick up a cup", hands="right")
    ids = prompt["input_ids"][0].tolist()
    start = ids.index(words.index("<img>"))  # the image tokens wrapped as InternVL wraps them
    assert ids[start + 1 : start + 5] == [words.index("<IMG_CONTEXT>")] * 4 and ids[start + 5] == words.index("</img>")
    assert model.generate_motion(**prompt, decode_ratio=0.5).motion_tokens.shape == (1, 1, 1, K)
    tokens = np.concatenate(
        [rng.integers(0, CODEBOOK, (1, K // 2)), rng.integers(CODEBOOK, 2 * CODEBOOK, (1, K // 2))], 1
    )
    batch = processor(images=random_image(rng), text="pick up a cup", motion={"right": tokens})
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
    text = tokenizer.decode(batch["input_ids"][0])
    assert "pick up a cup" in text and "<mot>" + "[MASK]" * K + "</mot>" in text.replace(" ", "")
    processor.save_pretrained(tmp_path / "saved")
    assert len(PELAProcessor.from_pretrained(tmp_path / "saved").tokenizer) == len(tokenizer)
    with pytest.raises(ValueError, match="holds motion tokens at other ids"):
        add_motion_vocabulary(tokenizer, 256, codebook_size=8)  # extended for another layout
    with pytest.raises(ValueError, match=f"the tokenizer has {len(words)} tokens but the model's text vocabulary ends"):
        add_motion_vocabulary(AutoTokenizer.from_pretrained(tmp_path / "vlm"), 3, codebook_size=8)


def test_processor_from_pretrained_components_with_a_vjepa2_video_processor(tmp_path, motion_tokenizer):
    """A V-JEPA2 folder holds a video processor (video_preprocessor_config.json), not an image processor."""
    from transformers import VJEPA2Config, VJEPA2Model, VJEPA2VideoProcessor

    from modeling_pela import PELAForPretraining, PELAProcessor

    save_tiny_vlm_and_frame_encoder(tmp_path / "vlm", tmp_path / "dino")
    motion_tokenizer.save_pretrained(tmp_path / "motion")
    config = VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, crop_size=32,
                          frames_per_clip=2, tubelet_size=2, patch_size=16, pred_hidden_size=16,
                          pred_num_hidden_layers=1, pred_num_attention_heads=2, pred_num_mask_tokens=2)  # fmt: skip
    VJEPA2Model(config).save_pretrained(tmp_path / "vjepa")
    VJEPA2VideoProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32}).save_pretrained(
        tmp_path / "vjepa"
    )
    processor = PELAProcessor.from_pretrained_components(
        str(tmp_path / "vlm"), str(tmp_path / "motion"), str(tmp_path / "vjepa"), preset="tiny"
    )
    assert type(processor.frame_processor).__name__ == "VJEPA2VideoProcessor"
    rng = np.random.default_rng(10)
    inputs = processor(images=[[random_image(rng), random_image(rng)]], text="pick up a cup", hands="right")
    assert inputs["frame_pixel_values"].shape == (1, 1, 3, 32, 32)
    processor.save_pretrained(tmp_path / "saved")
    reloaded = PELAProcessor.from_pretrained(tmp_path / "saved")
    assert type(reloaded.frame_processor).__name__ == "VJEPA2VideoProcessor"
    layout = {"codebook_size": CODEBOOK, "tokens_per_chunk": K, "num_latent_queries": K, "chunk_length": 15}
    model = PELAForPretraining.from_pretrained_components(
        str(tmp_path / "vlm"), str(tmp_path / "vjepa"), preset="tiny", **layout
    ).eval()
    assert model.generate_motion(**inputs, decode_ratio=0.5).motion_tokens.shape == (1, 1, 1, K)
