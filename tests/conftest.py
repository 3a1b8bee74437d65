"""Suite-wide settings.

The tests run many small tensor operations, for which torch's intra-op threads cost more than they give on
a 2-core machine (and oversubscribe it badly when anything else runs): one thread per test process, unless
``ELBOLAB_TEST_THREADS`` says otherwise.
"""

import os

import torch

THREADS = os.environ.get("ELBOLAB_TEST_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", THREADS)  # subprocesses started by tests (CLI, torchrun, SIGKILL tests)
torch.set_num_threads(int(THREADS))
