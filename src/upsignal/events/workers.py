"""Map a function over items in worker processes, results in input order.

The workers leave Ctrl-C to the main process: they ignore SIGINT, which the
terminal sends to the whole process group, so an interrupted import shows no
worker tracebacks. A worker never handles a SIGINT, because it starts with
SIGINT blocked, inherited from the parent, and unblocks it only after setting
it to be ignored. On Linux each worker also has the kernel kill it when its
parent dies, so ``kill -9`` of the importing process leaves no worker behind.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# From <linux/prctl.h>: deliver a signal to this process when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def ordered_map(function: Callable[[Item], Result], items: Iterable[Item], workers: int) -> Iterator[Result]:
    """Yield ``function(item)`` for each item in order, computed in ``workers`` processes.

    At most ``2 * workers + 1`` items are in flight. If the caller stops early,
    because of KeyboardInterrupt or any other exception, items not yet started
    are cancelled and the workers are terminated, since no one will read their
    results. ``function`` and the items must pickle.
    """
    pool = start_pool(workers)
    try:
        pending: deque[concurrent.futures.Future[Result]] = deque()
        for item in items:
            pending.append(submit(pool, function, item))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True)


def start_pool(workers: int, niceness: int = 0) -> concurrent.futures.ProcessPoolExecutor:
    """Return a pool of ``workers`` processes that ignore Ctrl-C and die with this process.

    ``niceness`` lowers the workers' CPU priority, for work that must yield to the caller's.
    Submit work with ``submit``, and the thread that submits first must outlive the workers.
    """
    # Spawn, not fork, because a forked child would copy the open DuckDB connection and its threads.
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(), niceness)
    )


def submit(pool: concurrent.futures.ProcessPoolExecutor, function: Callable[..., Result],
           *args: object) -> concurrent.futures.Future[Result]:
    # ProcessPoolExecutor starts its workers inside submit.
    with _sigint_blocked():
        return pool.submit(function, *args)


def _terminate_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel the items not yet started and end the workers without waiting for their items."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14 and later
        pool.terminate_workers()
        return
    # Before Python 3.14 the private _processes map is the only handle on the
    # workers. shutdown() clears it, so it is read first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread, so that processes started meanwhile begin with it blocked.

    A Ctrl-C in that time stays pending and is raised here once the block ends.
    Platforms without ``pthread_sigmask`` (Windows) start workers unprotected.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(parent_pid: int, niceness: int) -> None:
    """Ignore SIGINT and, on Linux, die with the parent; runs first in every worker."""
    if niceness:
        os.nice(niceness)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        _kill_when_parent_dies(parent_pid)


def _kill_when_parent_dies(parent_pid: int) -> None:
    # The kernel sends the signal when the thread that started this worker exits.
    # ordered_map shuts its pool down before returning, so that thread outlives the workers.
    # The ingest writer starts its worker from the thread that runs the server.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        failed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0
    except (OSError, AttributeError) as error:
        log.warning("cannot make worker %d exit with its parent: %s", os.getpid(), error)
        return
    if failed:
        log.warning(
            "cannot make worker %d exit with its parent: prctl failed with errno %d", os.getpid(), ctypes.get_errno()
        )
        return
    # The parent may have died before prctl ran; the signal would then never come.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
