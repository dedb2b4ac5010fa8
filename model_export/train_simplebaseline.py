"""Train a MobileNetV2 SimpleBaseline briefly and export it as older exporters did: the INT8 test model.

    python -m model_export.train_simplebaseline --output tests/models/mobilenetv2_sb_coco_mini_128x96.onnx \\
        --annotations ../shared/data/coco-mini/test_coco.json --images ../shared/data/coco-mini \\
        --annotations ../shared/data/coco8-pose/annotations.json --images ../shared/data/coco8-pose

The samples, targets and loss are the HRNet trainer's (model_export.data, JointsMSELoss with target weights, the
official augmentation), so the crops match serving; the optimiser is Adam with the lr x0.1 for the last fifth of
the steps. The ONNX file keeps its BatchNormalization nodes, ReLU6 as Clip and opset 13
(simplebaseline.export_unfolded), is checked against torch in ONNX Runtime, and gets a card whose warning says
it is a test model: a few hundred steps on a few dozen persons make a model that the quantizer must handle, not
one that finds people.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from model_export.checkpoint import file_sha256
from model_export.data.dataset import Augmentation, CocoKeypointDataset, load_person_records
from model_export.export import OUTPUT_NAME, RELATIVE_TOLERANCE, ExportCheckFailed, describe_training, tool_versions
from model_export.loss import JointsMSELoss
from model_export.simplebaseline import SimpleBaseline, SimpleBaselineConfig, build_simplebaseline, export_unfolded
from model_export.train import EpochSampler, dataset_label
from posecore.modelcard import InputSpec, ModelCard, OutputSpec, WeightsInfo

log = logging.getLogger(__name__)

OPSET = 13  # what the older exporters wrote


def train_model(config: SimpleBaselineConfig, annotations: list[Path], images: list[Path], steps: int,
                batch_size: int, lr: float, seed: int) -> tuple[SimpleBaseline, dict]:
    """The trained network (eval mode) and a summary of its training for the card."""
    records, described = [], []
    aspect = config.input_size[1] / config.input_size[0]
    for annotation_file, image_dir in zip(annotations, images, strict=True):
        own = load_person_records(annotation_file, image_dir, aspect, config.num_joints)
        records += own
        described.append({"annotations": dataset_label(annotation_file), "persons": len(own)})
    dataset = CocoKeypointDataset(records, config, augmentation=Augmentation(), seed=seed, cache_images=True)
    model = build_simplebaseline(config, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(steps * 0.8)], 0.1)
    loss_fn = JointsMSELoss(use_target_weight=True)
    model.train()
    step, epoch, started = 0, 0, time.perf_counter()
    while step < steps:
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, epoch))
        for batch in loader:
            loss = loss_fn(model(batch["input"]), batch["target"], batch["target_weight"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 100 == 0 or step == steps:
                log.info("step %d/%d loss %.3g (%.0f s)", step, steps, float(loss.detach()),
                         time.perf_counter() - started)
            if step >= steps:
                break
        epoch += 1
    training = {"steps": step, "epochs_completed": epoch, "batch_size": batch_size, "datasets": described,
                "persons": len(dataset)}
    return model.eval(), training


def check_against_torch(path: Path, model: SimpleBaseline) -> dict:
    """ONNX Runtime against torch on random batches of 1 and 3 (the dynamic batch axis)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1234)
    max_diff, max_out = 0.0, 0.0
    for batch in (1, 3):
        x = torch.randn(batch, 3, *model.config.input_size, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = session.run([OUTPUT_NAME], {"input": x.numpy()})
        max_diff = max(max_diff, float(np.abs(actual - expected).max()))
        max_out = max(max_out, float(np.abs(expected).max()))
    tolerance = RELATIVE_TOLERANCE * max_out
    if not max_diff <= tolerance:
        raise ExportCheckFailed(f"ONNX Runtime differs from torch by {max_diff:.3g} (tolerance {tolerance:.3g})")
    return {"max_abs_diff": max_diff, "max_abs_output": max_out, "relative_diff": max_diff / max(max_out, 1e-30),
            "tolerance": tolerance, "batches": [1, 3], "provider": "CPUExecutionProvider"}


def write_card(path: Path, config: SimpleBaselineConfig, training: dict, check: dict) -> ModelCard:
    source, warning = describe_training(training, None)
    card = ModelCard(
        name=path.stem, arch=f"mobilenetv2_{config.width_mult:g}_simplebaseline_{config.deconv_channels}", trained=True,
        warning=warning,
        input=InputSpec(name="input", height=config.input_size[0], width=config.input_size[1]),
        output=OutputSpec(name=OUTPUT_NAME, height=config.heatmap_size[0], width=config.heatmap_size[1],
                          num_keypoints=config.num_joints),
        weights=WeightsInfo(source=source.replace("in-memory training checkpoint", "model_export.train_simplebaseline"),
                            seed=int(training["seed"])),
        onnx_sha256=file_sha256(path), opset=OPSET, dynamic_batch=True, versions=tool_versions(), export_check=check)
    card.write(path.with_suffix(".json"))
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, action="append", required=True)
    parser.add_argument("--images", type=Path, action="append", required=True)
    parser.add_argument("--output", type=Path, required=True, metavar="OUT.onnx")
    parser.add_argument("--input-size", type=int, nargs=2, default=(128, 96), metavar=("H", "W"))
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--deconv-channels", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if len(args.annotations) != len(args.images):
        parser.error("give one --images folder per --annotations file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = SimpleBaselineConfig(name=args.output.stem, input_size=tuple(args.input_size),
                                  width_mult=args.width_mult, deconv_channels=args.deconv_channels)
    model, training = train_model(config, args.annotations, args.images, args.steps, args.batch_size, args.lr,
                                  args.seed)
    training["seed"] = args.seed
    args.output.parent.mkdir(parents=True, exist_ok=True)
    export_unfolded(model, str(args.output), OPSET)
    try:
        check = check_against_torch(args.output, model)
    except ExportCheckFailed as exc:
        print(f"train_simplebaseline: {exc}", file=sys.stderr)
        return 1
    write_card(args.output, config, training, check)
    print(f"wrote {args.output} and its card ({training['steps']} steps on {training['persons']} persons)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
