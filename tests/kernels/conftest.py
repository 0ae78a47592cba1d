"""Run the Triton kernels through Triton's interpreter on machines without a CUDA GPU.

Triton picks compile-or-interpret when ``triton.jit`` decorates a kernel, i.e. when
``minillama.kernels`` is first imported, so the variable is set here, at collection time, before
any test imports the kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
