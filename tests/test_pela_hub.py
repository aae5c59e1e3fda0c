"""Hugging Face behaviour: safetensors save/load, Auto classes, remote code in a process where this repository is not
importable, the processor round trip, a peft LoRA adapter with trainable motion-token rows, and loading backbone
weights."""

from __future__ import annotations

import json

import pytest
import torch
from pela_testing import (
    make_sample,
    mask_batch,
    model_inputs,
    single_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_processor,
)
from remote_code import run_without_project
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from modeling_pela import PELAConfig, PELAForPretraining, PELAProcessor

PROMPT_KEYS = ("input_ids", "attention_mask", "pixel_values", "frame_pixel_values")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model after one EMA step (LAP and LSP differ), saved with its processor; plus a batch and a prompt."""
    model = tiny_model(seed=3, ema_alpha=0.5)
    with torch.no_grad():
        for parameter in model.perceiver.lsp_trunk.parameters():
            parameter.add_(0.01)
    model.ema_update()
    processor = tiny_processor(model.config)
    batch = model_inputs(
        mask_batch(processor.encode([make_sample(seed=0), make_sample("video_only", seed=1)]), model.config)
    )
    prompt = {k: v for k, v in processor(make_sample(seed=2), generation=True).items() if k in PROMPT_KEYS}
    directory = tmp_path_factory.mktemp("pela")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor, batch, prompt, directory


def test_save_pretrained_writes_safetensors_auto_map_and_flat_remote_code(saved):
    _, _, _, _, directory = saved
    files = {path.name for path in directory.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_pela.py", "modeling_pela.py", "perceiver.py"} <= files
    assert {"processing_pela.py", "processor_config.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_pela.PELAConfig",
        "AutoModel": "modeling_pela.PELAForPretraining",
    }
    assert json.loads((directory / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_pela.PELAProcessor"
    }
    # Flat remote code: only direct relative imports of one level (transformers <= 5.9 copies no deeper).
    modeling = (directory / "modeling_pela.py").read_text()
    assert "from .configuration_pela import" in modeling and "from .perceiver import" in modeling
    assert "from .configuration_pela import" in (directory / "perceiver.py").read_text()


def test_local_round_trip_is_exact(saved):
    model, _, batch, prompt, directory = saved
    for loaded in (PELAForPretraining.from_pretrained(directory), AutoModel.from_pretrained(directory)):
        assert type(loaded) is PELAForPretraining and isinstance(AutoConfig.from_pretrained(directory), PELAConfig)
        for (name, value), (other, expected) in zip(
            loaded.state_dict().items(), model.state_dict().items(), strict=True
        ):
            assert name == other and torch.equal(value, expected), name
        assert not loaded.perceiver.lap_trunk.input_proj.weight.requires_grad  # decoupling survives loading
        assert not any(p.requires_grad for p in loaded.frame_encoder.parameters())
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(**batch).loss, model(**batch).loss)
    generated = model.generate_motion(**prompt, hands="right", decode_ratio=0.5).motion_tokens
    assert torch.equal(loaded.generate_motion(**prompt, hands="right", decode_ratio=0.5).motion_tokens, generated)
    processor = PELAProcessor.from_pretrained(directory)
    assert processor.motion_token_offset == 256
    assert type(processor.frame_processor).__name__ == "DINOv3ViTImageProcessor"
    samples = [make_sample(seed=0), make_sample("video_only", seed=1)]
    assert torch.equal(processor.encode(samples)["input_ids"], saved[1].encode(samples)["input_ids"])


def prompt_with_masked_chunk(model: PELAForPretraining, prompt: dict) -> dict:
    """The prompt followed by one all-[MASK] chunk: the input of a robot head's predictive embeddings."""
    config = model.config
    chunk = [config.mot_start_token_id] + [config.mask_token_id] * config.tokens_per_chunk + [config.mot_end_token_id]
    chunk = torch.tensor([chunk]).expand(prompt["input_ids"].shape[0], -1)
    return {
        **prompt,
        "input_ids": torch.cat([prompt["input_ids"], chunk], 1),
        "attention_mask": torch.cat([prompt["attention_mask"], torch.ones_like(chunk)], 1),
    }


def test_remote_code_in_a_process_without_the_repository(saved, tmp_path):
    model, _, batch, prompt, directory = saved
    torch.save({"batch": dict(batch), "prompt": prompt}, tmp_path / "inputs.pt")
    with torch.no_grad():
        loss = float(model(**batch).loss)
        embeddings = model.get_predictive_embeddings(**prompt_with_masked_chunk(model, prompt)).predictive_embeddings
    tokens = model.generate_motion(**prompt, hands="right", decode_ratio=0.5).motion_tokens
    torch.save(prompt_with_masked_chunk(model, prompt), tmp_path / "embedding_inputs.pt")
    script = f"""
        import json
        import torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(directory)!r}, trust_remote_code=True)
        assert not any(name.split(".")[0] == "modeling_pela" for name in sys.modules)
        inputs = torch.load("inputs.pt")
        with torch.no_grad():
            loss = float(model(**inputs["batch"]).loss)
            embeddings = model.get_predictive_embeddings(**torch.load("embedding_inputs.pt")).predictive_embeddings
            from_prompt = model.get_predictive_embeddings(**inputs["prompt"]).predictive_embeddings
        tokens = model.generate_motion(**inputs["prompt"], hands="right", decode_ratio=0.5).motion_tokens
        torch.save({{"embeddings": embeddings, "from_prompt": from_prompt, "tokens": tokens}}, "remote.pt")
        print("REMOTE=" + json.dumps([type(model).__module__, type(processor).__module__, loss,
                                      processor.mask_token_id]))
        """
    result = run_without_project(script, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    module, processor_module, remote_loss, mask_id = json.loads(result.stdout.split("REMOTE=")[-1])
    assert module.startswith("transformers_modules.") and processor_module.startswith("transformers_modules.")
    assert remote_loss == pytest.approx(loss, rel=1e-5) and mask_id == model.config.mask_token_id
    remote = torch.load(tmp_path / "remote.pt")
    torch.testing.assert_close(remote["embeddings"], embeddings)
    with torch.no_grad():
        torch.testing.assert_close(
            remote["from_prompt"], model.get_predictive_embeddings(**prompt).predictive_embeddings
        )
    assert torch.equal(remote["tokens"], tokens)


def test_peft_lora_with_trainable_motion_tokens_saves_and_reloads(saved, tmp_path):
    peft = pytest.importorskip("peft")
    model, _, batch, _, directory = saved
    config = model.config
    new_ids = list(range(config.motion_token_offset, config.text_config.vocab_size))
    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
        # The backbone ties its LM head to the embeddings; PELA's config does not expose that tie to peft, so both
        # get trainable motion rows (the head's rows give the MCP logits).
        trainable_token_indices={"embed_tokens": new_ids, "lm_head": new_ids},
        modules_to_save=["perceiver"],
    )
    base = PELAForPretraining.from_pretrained(directory)
    peft_model = peft.get_peft_model(base, lora)
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in name for name in trainable) and any("trainable_tokens_delta" in name for name in trainable)
    assert not any("vision_tower" in name or "frame_encoder" in name for name in trainable)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    out = peft_model(**batch)
    out.loss.backward()
    assert all(p.grad is None for name, p in peft_model.named_parameters() if ".lap_trunk." in name)
    deltas = {name: p.grad for name, p in peft_model.named_parameters() if "trainable_tokens_delta" in name}
    assert any("lm_head" in name for name in deltas) and any("embed_tokens" in name for name in deltas)
    assert all(grad is not None and grad.abs().sum() > 0 for grad in deltas.values())
    optimizer.step()
    peft_model.base_model.model.ema_update()
    peft_model.eval()
    with torch.no_grad():
        logits = peft_model(**batch).logits
        assert not torch.allclose(logits, model(**batch).logits)  # LoRA, motion rows and perceiver moved
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = peft.PeftModel.from_pretrained(PELAForPretraining.from_pretrained(directory), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch).logits, logits)


def test_load_backbone_weights_copies_text_rows_and_initialises_motion_rows(saved):
    model, _, _, _, _ = saved

    def backbone(vocab_size: int) -> torch.nn.Module:
        config = model.config.vlm_config.to_dict()
        config["text_config"]["vocab_size"] = vocab_size
        return AutoModelForImageTextToText.from_config(model.config.vlm_config.__class__(**config))

    torch.manual_seed(5)
    pretrained = backbone(model.config.motion_token_offset)
    fresh = tiny_model(seed=9)
    fresh.load_backbone_weights(pretrained, model.frame_encoder)
    text = pretrained.get_input_embeddings().weight
    rows = fresh.get_input_embeddings().weight
    assert torch.equal(rows[: text.shape[0]], text)
    torch.testing.assert_close(rows[text.shape[0] :], text.mean(0).expand(rows.shape[0] - text.shape[0], -1))
    layer = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(fresh.vlm.state_dict()[layer], pretrained.state_dict()[layer])
    patches = "embeddings.patch_embeddings.weight"
    assert torch.equal(fresh.frame_encoder.state_dict()[patches], model.frame_encoder.state_dict()[patches])
    with pytest.raises(ValueError, match="backbone shape"):
        fresh.load_backbone_weights(backbone(100))


def test_from_pretrained_components_loads_saved_backbone_and_frozen_frame_encoder(tmp_path):
    """The way real InternVL3 / DINOv3 weights are loaded, with tiny saved components: the backbone's text rows and
    layers, the frame encoder's weights (frozen), the component configs; the motion vocabulary extends the text one."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    tiny = PELAConfig.tiny()
    vlm_config = tiny.vlm_config.to_dict()
    vlm_config["text_config"]["vocab_size"] = tiny.motion_token_offset
    vlm = AutoModelForImageTextToText.from_config(tiny.vlm_config.__class__(**vlm_config))
    vlm.save_pretrained(tmp_path / "vlm")
    encoder = DINOv3ViTModel(DINOv3ViTConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                                             num_attention_heads=2, patch_size=8, image_size=64))  # fmt: skip
    encoder.save_pretrained(tmp_path / "encoder")
    model = PELAForPretraining.from_pretrained_components(
        tmp_path / "vlm", tmp_path / "encoder", preset="tiny", align_layer=2
    )
    assert model.config.motion_token_offset == tiny.motion_token_offset and model.config.align_layer == 2
    assert model.config.frame_encoder_config.hidden_size == 48 and model.config.frame_dim == 48
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == tiny.motion_token_offset + 2 * tiny.codebook_size + 5
    assert torch.equal(rows[: tiny.motion_token_offset], vlm.get_input_embeddings().weight)
    for name, value in encoder.state_dict().items():
        assert torch.equal(model.frame_encoder.state_dict()[name], value), name
    assert not any(p.requires_grad for p in model.frame_encoder.parameters())
    batch = model_inputs(
        mask_batch(tiny_processor(model.config, frame_size=64).encode([make_sample(seed=1)]), model.config)
    )
    assert torch.isfinite(model(**batch).loss)


def test_from_pretrained_components_public_contract_follows_the_loaded_components(tmp_path):
    """The issue's contract: tiny InternVL / DINOv3 from ``PELAConfig.tiny()``'s configs, saved (weights and config
    only), load with no preset; the config follows them and every vision-tower, decoder-layer and frame-encoder
    tensor is the saved one. An explicit field still wins."""
    from transformers import DINOv3ViTModel

    torch.manual_seed(0)
    tiny = PELAConfig.tiny()
    vlm = AutoModelForImageTextToText.from_config(tiny.vlm_config)
    vlm.save_pretrained(tmp_path / "vlm")
    encoder = DINOv3ViTModel(tiny.frame_encoder_config)
    encoder.save_pretrained(tmp_path / "dino")
    model = PELAForPretraining.from_pretrained_components(
        vlm_name_or_path=tmp_path / "vlm", frame_encoder_name_or_path=tmp_path / "dino"
    )
    config = model.config
    assert config.align_layer == 3  # round(4 layers x 19 / 28)
    assert (config.perceiver_hidden_size, config.perceiver_num_heads) == (32, 2)  # the frame encoder's
    assert config.motion_token_offset == tiny.text_config.vocab_size
    saved = vlm.state_dict()
    checked = [name for name in saved if "vision_tower" in name or ".layers." in name]
    assert any("vision_tower" in name for name in checked) and any("language_model.layers" in name for name in checked)
    for name in checked:
        assert torch.equal(model.vlm.state_dict()[name], saved[name]), name
    for name, value in encoder.state_dict().items():
        assert torch.equal(model.frame_encoder.state_dict()[name], value), name
    override = PELAForPretraining.from_pretrained_components(
        tmp_path / "vlm", tmp_path / "dino", align_layer=1, perceiver_hidden_size=16
    )
    assert (override.config.align_layer, override.config.perceiver_hidden_size) == (1, 16)
    deep = PELAConfig.from_components(PELAConfig().vlm_config)
    assert deep.align_layer == 19 and PELAConfig.from_components(tiny.vlm_config, preset="tiny").align_layer == 3


def test_from_pretrained_components_precomputed_features_and_reported_missing_weights(tmp_path, caplog):
    """No frame encoder: precomputed features of ``frame_feature_dim`` (required). Tensors missing from a
    component's folder are named in a warning and in ``output_loading_info``; a frozen frame encoder refuses them."""
    from safetensors.torch import load_file, save_file
    from transformers import DINOv3ViTModel

    tiny = PELAConfig.tiny()
    AutoModelForImageTextToText.from_config(tiny.vlm_config).save_pretrained(tmp_path / "vlm")
    DINOv3ViTModel(tiny.frame_encoder_config).save_pretrained(tmp_path / "dino")
    model = PELAForPretraining.from_pretrained_components(tmp_path / "vlm", None, frame_feature_dim=24)
    assert model.frame_encoder is None and model.config.frame_encoder_config is None and model.config.frame_dim == 24
    with pytest.raises(ValueError, match="precomputed frame features: give their width as frame_feature_dim="):
        PELAForPretraining.from_pretrained_components(tmp_path / "vlm", None)

    dropped = {}
    for name in ("vlm", "dino"):
        weights = load_file(tmp_path / name / "model.safetensors")
        dropped[name] = next(key for key in weights if ".layers.1.mlp.up_proj" in key or "layer.1.mlp" in key)
        del weights[dropped[name]]
        save_file(weights, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level("WARNING"):
        model, info = PELAForPretraining.from_pretrained_components(
            tmp_path / "vlm", None, frame_feature_dim=24, output_loading_info=True
        )
    missing = info["vlm"]["missing_keys"]
    assert missing == ["model.language_model.layers.1.mlp.up_proj.weight"]
    assert any(
        missing[0] in record.getMessage() and "randomly initialised" in record.getMessage() for record in caplog.records
    )
    with pytest.raises(ValueError, match=f"lacks weights .*{dropped['dino']}.*the frame encoder is frozen"):
        PELAForPretraining.from_pretrained_components(tmp_path / "vlm", tmp_path / "dino")
