"""Which part of a data set this process explains: ``worker=(i, N)`` (``--worker i/N``), or read from
the environment of a batch scheduler. Worker ``i`` of ``N`` explains the shards ``k`` with
``k % N == i``; the workers share nothing but the run directory.

Recognised environments (``worker='auto'``, ``--worker auto``):

* ``INTERPRETTENSOR_WORKER=i/N`` (set it yourself, e.g. from a job template);
* Slurm job arrays: ``SLURM_ARRAY_TASK_ID`` with ``SLURM_ARRAY_TASK_COUNT`` (or
  ``SLURM_ARRAY_TASK_MIN``/``SLURM_ARRAY_TASK_MAX`` for arrays with step 1): ``sbatch --array=0-7``;
* Kubernetes indexed jobs: ``JOB_COMPLETION_INDEX`` with ``INTERPRETTENSOR_NUM_WORKERS`` (Kubernetes
  does not export the number of completions; set it from the job's ``completions``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from .shards import StreamError

__all__ = ["Worker", "parse_worker", "worker_from_environment"]


@dataclasses.dataclass(frozen=True)
class Worker:
    """Worker ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _make(index: Any, count: Any, where: str) -> Worker:
    try:
        i, n = int(index), int(count)
    except (TypeError, ValueError):
        raise StreamError(f"{where}: a worker is 'i/N' with integers, got {index!r}/{count!r}") from None
    if n < 1 or not 0 <= i < n:
        raise StreamError(f"{where}: worker index must be in 0..N-1 and N >= 1, got {i}/{n}")
    return Worker(i, n)


def parse_worker(spec: Any, environ: Mapping[str, str] | None = None) -> Worker | None:
    """``None`` (one process explains everything), ``(i, N)``, ``'i/N'`` or ``'auto'`` (from the
    environment; an error if none is recognised)."""
    if spec is None:
        return None
    if isinstance(spec, Worker):
        return spec
    if isinstance(spec, str):
        if spec.strip().lower() == "auto":
            found = worker_from_environment(environ)
            if found is None:
                raise StreamError("worker='auto': no worker found in the environment; set INTERPRETTENSOR_WORKER=i/N, "
                                  "run as a Slurm array task, or a Kubernetes indexed job with "
                                  "INTERPRETTENSOR_NUM_WORKERS")
            return found
        i, sep, n = spec.partition("/")
        if not sep:
            raise StreamError(f"worker: expected 'i/N' (e.g. '0/4') or 'auto', got {spec!r}")
        return _make(i.strip(), n.strip(), "worker")
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return _make(spec[0], spec[1], "worker")
    raise StreamError(f"worker must be None, (i, N), 'i/N' or 'auto', got {spec!r}")


def worker_from_environment(environ: Mapping[str, str] | None = None) -> Worker | None:
    """The worker a batch scheduler started this process as, or ``None``."""
    env = os.environ if environ is None else environ
    if env.get("INTERPRETTENSOR_WORKER"):
        return parse_worker(env["INTERPRETTENSOR_WORKER"], env)
    if "SLURM_ARRAY_TASK_ID" in env:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        if env.get("SLURM_ARRAY_TASK_COUNT"):
            lo = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            return _make(task - lo, env["SLURM_ARRAY_TASK_COUNT"], "Slurm array")
        if env.get("SLURM_ARRAY_TASK_MAX"):
            lo, hi = int(env.get("SLURM_ARRAY_TASK_MIN", 0)), int(env["SLURM_ARRAY_TASK_MAX"])
            return _make(task - lo, hi - lo + 1, "Slurm array")
    if "JOB_COMPLETION_INDEX" in env:
        count = env.get("INTERPRETTENSOR_NUM_WORKERS")
        if not count:
            raise StreamError("a Kubernetes indexed job (JOB_COMPLETION_INDEX is set) needs INTERPRETTENSOR_NUM_WORKERS, "
                              "the job's number of completions")
        return _make(env["JOB_COMPLETION_INDEX"], count, "Kubernetes indexed job")
    return None
