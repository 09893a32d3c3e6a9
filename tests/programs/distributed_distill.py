"""Teacher and student on Fashion-MNIST rows, trained by however many processes run this file
(alone, or under ``torchrun``); writes the final metrics and how many rows the teacher saw.

Usage: ``python distributed_distill.py DATA_ROOT RESULT.json`` (run by tests/test_distributed.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from crossdistill.data import ArrayData
from crossdistill.data.datasets import fashion_mnist
from crossdistill.files import write_if_changed
from crossdistill.methods import Distillation, Supervised
from crossdistill.models import mlp
from crossdistill.training import TeacherCache, distributed, evaluate, fit

root, result = Path(sys.argv[1]), Path(sys.argv[2])
distributed.start()
splits = fashion_mnist(small=301, seed=0, data_dir=root, download=False)
big = ArrayData(splits.big.x[:1203], splits.big.y[:1203])
small, test = splits.small, ArrayData(splits.test.x[:500], splits.test.y[:500])
settings = {"batch_size": 64, "optimizer": {"name": "adam", "lr": 3e-3}}

torch.manual_seed(0)
teacher = Supervised(mlp(in_shape=(1, 28, 28), num_outputs=10, hidden=[64]))
fit(teacher, big, epochs=2, seed=0, **settings)
seen = torch.zeros(())


def count(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
    seen.add_(len(args[0]))


hook = teacher.register_forward_hook(count)
outputs = TeacherCache().outputs(teacher.eval(), None, small.x)
hook.remove()

torch.manual_seed(1)
student = Distillation(mlp(in_shape=(1, 28, 28), num_outputs=10, hidden=[32]), lam=0.5)
history = fit(student, small.columns() | {"teacher/teacher": outputs}, epochs=3, seed=1, **settings)
write_if_changed(
    result,
    json.dumps(
        {
            "processes": distributed.processes(),
            "teacher_rows": float(distributed.reduce_sum(seen)),
            "teacher": evaluate(teacher, test, "classification"),
            "student": history[-1] | evaluate(student, test, "classification"),
        }
    ),
)
