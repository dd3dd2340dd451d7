"""The torch proxy on a CUDA GPU: queued calls (pinned, non-blocking copies, one
event per batch) give the same answers as the CPU. Skipped where there is no GPU;
`python -m falconer_ray.bench.gpu_proxy` measures the speed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from falconer_ray.proxy import Proxy, ProxyModel
from falconer_ray.proxy.torch_forward import Queued

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

INSTR = "extract the colour"


def texts(n: int = 40) -> list[str]:
    rng = random.Random(0)
    words = "red blue green car house bird a the near big small old".split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([3, 20, 150]))) for _ in range(n)]


def test_queued_gpu_calls_answer_as_the_cpu_does():
    torch.manual_seed(0)
    model = ProxyModel.from_base("minilm").eval()
    cpu = Proxy(model, device="cpu", batch_size=4, max_length=64, stride=16)
    cpu_scores = cpu.label_scores(texts(), INSTR)
    cpu_spans, cpu_conf = cpu.extract_with_confidence(texts(), INSTR, threshold=0.0)
    gpu = Proxy(model, device="cuda", batch_size=4, max_length=64, stride=16, dtype=torch.float32)
    assert gpu.forward.queued
    ids = np.ones((2, 8), dtype=np.int64)
    assert isinstance(gpu.forward(ids, ids), Queued)
    np.testing.assert_allclose(gpu.label_scores(texts(), INSTR), cpu_scores, atol=1e-3)
    gpu_spans, gpu_conf = gpu.extract_with_confidence(texts(), INSTR, threshold=0.0)
    np.testing.assert_allclose(gpu_conf, cpu_conf, atol=1e-3)
    same = sum([(s.start, s.end) for s in a] == [(s.start, s.end) for s in b] for a, b in zip(gpu_spans, cpu_spans))
    assert same >= len(cpu_spans) - 1  # a tag probability within 1e-3 of a tie may flip
