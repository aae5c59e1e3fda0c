"""Learnability of the procedural lab data: do the first frame and the instruction predict the motion?

Small models are trained on CPU to predict both hands' 21 joints over the first chunk (``--horizon`` 15 frames, what
the demo scores) of lab clips,
and evaluated on held-out lab clips (MWTE = mean wrist trajectory error, MPJPE; centimetres, built-in skeleton):

* ``mean``: the training set's mean motion of each hand;
* ``instruction``: bag-of-words instruction embedding -> MLP;
* ``image``: first frame -> small CNN with spatial soft-argmax keypoints (no instruction);
* ``image+instruction``: the same CNN, its features modulated by the instruction (FiLM).

The conditional model must beat the mean motion by a wide margin: the target object (named by colour and shape
among distractors) and its position in the first frame determine the motion.

Run from the repository root: ``python -m benchmarks.procedural_learnability``.
"""

from __future__ import annotations

import argparse
import math
import re
import time

import numpy as np
import torch
from torch import nn

from datasets_unihand_mix import ProceduralClip, ProceduralConfig, generate_clips
from trainers.metrics.hand_motion import compute_hand_motion_metrics

SIDES = ("left", "right")


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def build_arrays(clips: list[ProceduralClip], vocab: dict[str, int], horizon: int) -> dict[str, torch.Tensor]:
    """Images (N, 3, H, W) in [0, 1], padded word ids (N, L), joints (N, 2, horizon, 21, 3) and hand mask (N, 2)."""
    images = np.stack([clip.render_frame(0) for clip in clips]).astype(np.float32) / 255.0
    ids = [[vocab.get(w, 0) for w in tokenize(clip.instruction)] for clip in clips]
    length = max(map(len, ids))
    words = np.zeros((len(clips), length), dtype=np.int64)
    for i, row in enumerate(ids):
        words[i, : len(row)] = row
    joints = np.zeros((len(clips), 2, horizon, 21, 3), dtype=np.float32)
    mask = np.zeros((len(clips), 2), dtype=np.float32)
    for i, clip in enumerate(clips):
        for k, side in enumerate(SIDES):
            kp = clip.joints().get(side)
            if kp is not None:
                joints[i, k], mask[i, k] = kp[:horizon], 1.0
    return {
        "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        "words": torch.from_numpy(words),
        "joints": torch.from_numpy(joints),
        "mask": torch.from_numpy(mask),
    }


class MotionPredictor(nn.Module):
    """First frame and/or instruction -> both hands' joints over the horizon (normalized).

    The CNN sees the image with two coordinate channels; the instruction embedding modulates its last feature map
    (FiLM), which is reduced to 4 channels and flattened, so the head reads where the named object is.
    """

    def __init__(
        self, vocab_size: int, use_image: bool, use_text: bool, out_dim: int, image_size: int, width: int = 32
    ) -> None:
        super().__init__()
        self.use_image, self.use_text = use_image, use_text
        text_dim = 64
        head_in = 0
        if use_text:
            self.text = nn.EmbeddingBag(vocab_size, text_dim, mode="sum", padding_idx=0)
            head_in += text_dim
        if use_image:
            self.cnn = nn.Sequential(
                nn.Conv2d(5, width, 5, stride=2, padding=2),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
            )
            if use_text:
                self.film = nn.Linear(text_dim, 2 * width)
            self.reduce = nn.Conv2d(width, 4, 1)
            head_in += 4 * math.ceil(image_size / 4) ** 2
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(head_in, 512), nn.ReLU(), nn.Linear(512, out_dim))

    def forward(self, images: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        feats = []
        text = self.text(words) if self.use_text else None
        if text is not None:
            feats.append(text)
        if self.use_image:
            n, _, h, w = images.shape
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            x = self.cnn(torch.cat([images - 0.5, xs.expand(n, 1, h, w), ys.expand(n, 1, h, w)], 1))
            if text is not None:
                gain, bias = self.film(text)[:, :, None, None].chunk(2, dim=1)
                x = x * (1 + gain) + bias
            feats.append(self.reduce(torch.relu(x)).flatten(1))
        return self.head(torch.cat(feats, 1))


def masked_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    err = ((pred - target) ** 2).reshape(mask.shape[0], 2, -1).mean(-1)
    return (err * mask).sum() / mask.sum().clamp_min(1)


def train(
    model: MotionPredictor, data: dict[str, torch.Tensor], target: torch.Tensor, epochs: int, batch_size: int = 64
) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = epochs * math.ceil(len(target) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(target), generator=gen).split(batch_size):
            loss = masked_loss(model(data["images"][batch], data["words"][batch]), target[batch], data["mask"][batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def evaluate(pred_joints: torch.Tensor, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """Metrics (cm) over every (clip, present hand) of the test set."""
    keep = data["mask"].bool()
    return compute_hand_motion_metrics(pred_joints[keep].double().numpy(), data["joints"][keep].double().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-test", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=15, help="frames predicted from the start of each clip")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)

    start = time.time()
    config = ProceduralConfig(style="lab", seed=args.seed, image_size=args.image_size)
    clips = generate_clips(args.num_train + args.num_test, config, num_workers=args.num_workers, render="first")
    train_clips, test_clips = clips[: args.num_train], clips[args.num_train :]
    vocab = {w: i + 1 for i, w in enumerate(sorted({w for c in train_clips for w in tokenize(c.instruction)}))}
    train_data, test_data = (
        build_arrays(train_clips, vocab, args.horizon),
        build_arrays(test_clips, vocab, args.horizon),
    )
    print(f"data: {len(train_clips)} train / {len(test_clips)} held-out lab clips, {time.time() - start:.0f} s")

    joints, mask = train_data["joints"], train_data["mask"]
    weights = mask[:, :, None, None, None]
    mean = (joints * weights).sum(0) / weights.sum(0)  # (2, horizon, 21, 3) mean motion per hand
    std = (((joints - mean) ** 2 * weights).sum() / (weights.sum() * args.horizon * 63)).sqrt()
    target = ((joints - mean) / std).flatten(1)

    results = {"mean motion": evaluate(mean.expand_as(test_data["joints"]), test_data)}
    for name, use_image, use_text in (
        ("instruction only", False, True),
        ("image only", True, False),
        ("image + instruction", True, True),
    ):
        t0 = time.time()
        model = MotionPredictor(len(vocab) + 1, use_image, use_text, target.shape[1], args.image_size)
        train(model, train_data, target, args.epochs)
        model.eval()
        with torch.no_grad():
            pred = model(test_data["images"], test_data["words"]).reshape(-1, *mean.shape) * std + mean
        results[name] = evaluate(pred, test_data)
        print(f"trained {name!r} in {time.time() - t0:.0f} s")

    print(f"\nheld-out lab clips, first {args.horizon} frames, both hands (cm; built-in skeleton)")
    print(f"{'model':<22}{'MWTE':>8}{'MPJPE':>8}{'PA-MPJPE':>10}")
    for name, metrics in results.items():
        print(f"{name:<22}{metrics['mwte']:>8.2f}{metrics['mpjpe']:>8.2f}{metrics['pa_mpjpe']:>10.2f}")
    ratio = results["image + instruction"]["mpjpe"] / results["mean motion"]["mpjpe"]
    print(f"\nimage + instruction / mean motion (MPJPE): {ratio:.2f}; total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
