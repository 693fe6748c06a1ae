#!/usr/bin/env bash
# One GPU check of the training step at the real-run size: 128x128 patches, dim 64, dim_mults 1-2-4-8,
# bf16-mixed, batch 32, a few hundred steps. Prints JSON lines {"metric","value","unit"}: samples/s of a
# bare PyTorch loop and of the Lightning fit (run_training, in-memory DataModule), peak GPU memory, and
# ensemble sampling speed. Fails at once (exit 2) without a CUDA GPU.
#
#   bash bench/gpu_check.sh [STEPS]          # default 300 timed steps per method
#
# It installs nothing from the network. Where diffusers is missing (the device image has torch and
# lightning but not diffusers), it installs the wheels in build/gpu_wheels/ if they are there:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d build/gpu_wheels diffusers==0.42.1 importlib_metadata==8.7.0
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-300}"
PY="${PYTHON:-python3}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo '{"metric": "error", "value": "no NVIDIA GPU (nvidia-smi missing or failing)", "unit": ""}'
    exit 2
fi
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)' || {
    echo '{"metric": "error", "value": "torch sees no CUDA device", "unit": ""}'
    exit 2
}
if ! "$PY" -c 'import diffusers' >/dev/null 2>&1; then
    if ls build/gpu_wheels/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/depthdif-site \
            build/gpu_wheels/*.whl
        export PYTHONPATH="/tmp/depthdif-site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo '{"metric": "error", "value": "diffusers missing and no wheels in build/gpu_wheels", "unit": ""}'
        exit 2
    fi
fi
export PYTHONPATH="$PWD/src:$PWD/bench:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PY" - "$STEPS" <<'PYEOF'
"""The measurements; the config comes from the schema defaults (no jsonschema needed) + GPU sizes."""
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import yaml

from batch_factory import TinyDataModule
from train_step import bare_rate, emit, lightning_rate

from depthdif.train import build_module

warnings.filterwarnings("ignore")
logging.basicConfig(level=logging.WARNING)
steps, warmup = int(sys.argv[1]), 20


def schema_defaults(schema: dict) -> dict:
    out = {}
    for name, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            out[name] = schema_defaults(sub)
        elif "default" in sub:
            out[name] = sub["default"]
    return out


config = schema_defaults(yaml.safe_load(Path("src/depthdif/config.schema.yaml").read_text()))
config["export"].update({"patch_size": 128, "stride": 128})
config["loader"].update({"batch_size": 32})
config["model"].update({"dim": 64, "dim_mults": [1, 2, 4, 8]})
config["train"].update({"precision": "bf16-mixed", "accelerator": "gpu", "devices": 1, "threads": 8,
                        "warmup_steps": 100, "log_every_n_steps": 50})
variant = "eo_4band"
device = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True

emit("device", torch.cuda.get_device_name(0), "")
emit("torch", torch.__version__, "")
emit("batch_size", 32, "samples")
emit("patch_size", 128, "px")
emit("parameters", sum(p.numel() for p in build_module(config, variant).parameters()), "count")

# loader as in config/glorys.yaml (workers, pinned memory): with num_workers=0 and pageable memory the
# fit reached only 0.72 of the bare loop on an H200 (collation and copies in the training process)
datamodule = TinyDataModule(variant, train_size=256, val_size=32, batch_size=32, size=128, seed=0,
                            num_workers=4, pin_memory=True)
batches = [{k: v.to(device) for k, v in b.items()} for b in datamodule.train_dataloader()][:8]

for channels_last in (False, True):
    config["train"]["channels_last"] = channels_last
    torch.cuda.reset_peak_memory_stats()
    rate = bare_rate(config, variant, batches, steps, warmup, device)
    suffix = "_channels_last" if channels_last else ""
    emit(f"bare_loop_samples_per_s{suffix}", round(rate, 1), "samples/s")
    emit(f"bare_loop_peak_memory{suffix}", round(torch.cuda.max_memory_allocated() / 2**30, 2), "GiB")
config["train"]["channels_last"] = False

with tempfile.TemporaryDirectory() as tmp:
    torch.cuda.reset_peak_memory_stats()
    fit = lightning_rate(config, variant, datamodule, steps, warmup, Path(tmp) / "run")
    emit("lightning_fit_samples_per_s", round(fit, 1), "samples/s")
    emit("lightning_fit_peak_memory", round(torch.cuda.max_memory_allocated() / 2**30, 2), "GiB")
    bare = bare_rate(config, variant, batches, steps, warmup, device)
    emit("bare_loop_samples_per_s_after_fit", round(bare, 1), "samples/s")
    emit("lightning_vs_bare", round(fit / bare, 3), "fraction (target >= 0.9)")

    # ensemble sampling as the evaluation stage uses it: 16 members, 25 DDIM steps, one batched call
    module = build_module(config, variant).to(device).eval()
    batch = {k: v[:8] for k, v in batches[0].items()}
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        module.sample(batch, 16, 2)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        module.sample(batch, 16, 25)
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    emit("ddim25_ensemble_members_per_s", round(8 * 16 / elapsed, 1), "fields/s (8 patches x 16 members)")
    emit("sampling_peak_memory", round(torch.cuda.max_memory_allocated() / 2**30, 2), "GiB")
PYEOF
