"""What reaches the terminal: our progress and results, library chatter only with --debug."""

from __future__ import annotations

import os

from clbench.core.termination import exit_with_parent


def quiet_libraries(debug: bool) -> None:
    """Keep the terminal for our progress and results: library chatter only with --debug."""
    if debug:
        return
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="qpsolvers")  # Avalanche imports it; we use no QP solver
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Avalanche is transitioning")
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def init_worker(threads: int) -> None:
    """A sweep's worker process: quiet like the CLI, and a fair share of the CPU cores.

    It lives here, not in the sweep module, so a fresh worker imports nothing heavy before it is quiet.
    """
    quiet_libraries(debug=False)
    exit_with_parent()  # a parent killed outright (SIGKILL, the OOM killer) takes its workers with it
    import threading

    import torch
    from tqdm import tqdm

    # A worker draws no bar: a thread lock spares tqdm its default cross-process semaphore, which a stopped
    # worker would leave to the resource tracker's "leaked semaphore" warning.
    tqdm.set_lock(threading.RLock())

    torch.set_num_threads(threads)
