"""``pela demo``: the main job on built-in procedural data, nothing downloaded.

Current stages (foundations): procedural lab + wild clips, GRQ-VAE tokenizer training, reconstruction metrics on
held-out lab and wild motion, previews. Writes ``results.json`` and prints a table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class DemoConfig:
    output_dir: str = "outputs/demo"
    seed: int = 0
    num_lab_clips: int = 800
    num_wild_clips: int = 500
    image_size: int = 96
    tokenizer_steps: int = 400
    codebook_size: int = 512
    num_workers: int = 2
    mano_dir: str | None = None


def run_demo(config: DemoConfig) -> dict:
    from .jobs import preview_procedural_clips, train_tokenizer_on_procedural

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for style in ("lab", "wild"):
        path = preview_procedural_clips(str(out / f"preview_{style}.png"), style, 4, config.seed, config.image_size)
        print(f"[demo] wrote {path}")
    print(f"[demo] training the motion tokenizer on {config.num_lab_clips} procedural lab clips ...")
    metrics = train_tokenizer_on_procedural(
        output_dir=str(out / "motion_tokenizer"),
        num_clips=config.num_lab_clips,
        max_steps=config.tokenizer_steps,
        batch_size=64,
        codebook_size=config.codebook_size,
        seed=config.seed,
        num_workers=config.num_workers,
        mano_dir=config.mano_dir,
    )
    results = {"motion_tokenizer": metrics, "config": asdict(config), "seconds": round(time.time() - start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nMotion tokenizer reconstruction (kinematics: {metrics['kinematics']}), cm")
    print(f"{'split':<6} {'MPJPE':>7} {'PA-MPJPE':>9} {'MWTE':>7} {'MDE':>7} {'usage(w/f)':>12}")
    for split in ("lab", "wild"):
        m = metrics[split]
        print(
            f"{split:<6} {m['mpjpe']:7.2f} {m['pa_mpjpe']:9.2f} {m['mwte']:7.2f} {m['mde']:7.2f} "
            f"{m['wrist_usage']:.2f}/{m['finger_usage']:.2f}"
        )
    print(f"\n[demo] done in {results['seconds']} s; results in {out / 'results.json'}")
    return results
