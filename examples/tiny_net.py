"""A small nn.Module, written as gradlab's model=module takes it: inputs (n, d) to predictions
(n, 1). Its parameters start as the module initialises them under torch.manual_seed(train.seed),
as in your own script; gradlab trains every configuration of a sweep as one program
(torch.func.functional_call under vmap).

    gradlab model=module model.target=examples/tiny_net.py:TinyNet +model.args.hidden=16 \
        data=teacher optimizer=adam optimizer.lr=0.01

Copy this file and write your own beside it; conf/experiment/tiny_net_teacher.yaml uses this one.
"""

import torch
from torch import nn


class TinyNet(nn.Module):
    """d inputs → `hidden` tanh units → 1 output."""

    def __init__(self, inputs: int = 5, hidden: int = 8):
        super().__init__()
        self.hidden = nn.Linear(inputs, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def tiny_net(width: int = 8) -> nn.Module:
    """The same network from a function that returns one (model.target may name either)."""
    return TinyNet(hidden=width)
