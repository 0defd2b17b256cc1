"""The framework's fixed cost: what the process holds before any case (interpreter, libraries,
kernels). It is outside ``PeakMemory``'s window and added to a case's peak for the budget."""

from __future__ import annotations

import sys

# Resident set of a Python process after ``import torch, transformers, peft`` and one forward +
# backward of a 2-layer, 64-wide Llama under bf16 autocast: what the process holds before any case.
# Measured with ``measure_framework_overhead()`` (VmRSS of a fresh interpreter) on this project's
# 2-core x86-64 CPU machine, torch 2.13.0+cpu, transformers 5.23.0, peft 0.21.2: 5 runs,
# 477.2-478.5 MB; the median is shipped. On CUDA the context and kernels come on top (typically
# 0.3-1 GB by GPU and CUDA version); not measured here, so no CUDA figure is claimed.
FRAMEWORK_OVERHEAD_BYTES = {"cpu": 477_364_224}

_OVERHEAD_PROBE = """
import torch, transformers, peft
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256)
model = LlamaForCausalLM(cfg)
ids = torch.randint(0, 256, (2, 16))
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = model(input_ids=ids, labels=ids).loss
loss.backward()
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024)
"""


def framework_overhead_bytes(device: str) -> int:
    """The shipped constant for ``device`` (cpu, cuda, cuda:1, ...); 0 where none was measured."""
    return FRAMEWORK_OVERHEAD_BYTES.get(device.split(":")[0], 0)


def measure_framework_overhead() -> int:
    """Measure the CPU constant again: the RSS in bytes of a fresh interpreter after the imports
    and a tiny step (Linux only: reads /proc). CalledProcessError when the probe fails."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _OVERHEAD_PROBE], capture_output=True, text=True, check=True, timeout=600
    )
    return int(out.stdout.strip().splitlines()[-1])
