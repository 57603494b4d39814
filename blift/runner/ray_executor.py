"""The Ray executor: the same stage code as the local executor, on a Ray cluster (Ray Core).

* ``cpu``/``io`` stages run as one Ray task per shard; the stage is built and set up inside the
  task. Ray re-runs a task whose worker process crashed (``max_retries``); exceptions are not
  retried by Ray (``retry_exceptions`` off) but counted here, as LocalExecutor does, so a shard
  gets ``max_attempts`` tries and then ``on_failed``.
* ``gpu`` stages (model stages) run on an actor pool: each actor builds and ``setup()``s the
  stage once and then runs shard after shard. Actors declare ``num_gpus=1`` when the cluster has
  GPUs (Ray then pins ``CUDA_VISIBLE_DEVICES``) and a fractional CPU, so actors can never take
  every CPU of a small node (the ray#44687 deadlock). An actor that dies is replaced by a fresh
  one and its shards are retried (counted like exceptions).
* Every ``ray.wait``/``ray.get`` has a timeout: a request the cluster can never satisfy (a stage
  that requires a GPU on a cluster without one) is refused up front with a BliftError, and a run
  in which nothing finishes for ``wait_timeout_s`` ends with one instead of hanging.
* Workers write the outputs themselves through ``worker.run_shard``, so outputs are
  byte-identical to the local executor's; the driver only receives ShardSummary objects.

Connects to ``address`` or ``RAY_ADDRESS``; otherwise starts a local Ray for this process
(shut down at exit). A cluster this process did not start is never shut down.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from blift.errors import BliftError, ConfigError
from blift.runner.local import ShardFailure, retry_or_fail
from blift.runner.worker import (
    ShardSummary,
    ShardTask,
    StageSpec,
    build_stage,
    run_shard,
)
from blift.storage import RunPath, local_dir, run_path

log = logging.getLogger("blift.runner")

# The driver's environment Ray workers need (a `ray start` head does not inherit it): these names,
# every name with one of the core's prefixes (stage registry and salt, object stores, model
# caches) or one the run's stages declare (``Stage.forward_env``: credentials, say), and the
# names listed in BLIFT_RAY_ENV (commas).
FORWARDED_ENV = ("PYTHONPATH", "SOURCE_DATE_EPOCH")
FORWARDED_PREFIXES = ("BLIFT_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "AWS_", "FSSPEC_")
POLL_S = 2.0  # how often the driver wakes while waiting (to check the no-progress timeout)
ACTOR_CPUS = 0.5
CALLS_PER_ACTOR = 2  # one running, one queued: an actor never idles between shards


class RayUnavailable(ConfigError):
    """Ray is not installed, or the cluster cannot be reached."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RayUnavailable("executor 'ray' needs Ray: pip install 'blift[ray]' (or 'ray[default]')") from exc
    return ray


def forwarded_env(environ: Mapping[str, str], stage_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """The variables a driver passes to its Ray workers (runtime_env), see FORWARDED_ENV."""
    extra = {name.strip() for name in environ.get("BLIFT_RAY_ENV", "").split(",") if name.strip()}
    prefixes = FORWARDED_PREFIXES + tuple(stage_prefixes)
    return {k: v for k, v in environ.items()
            if v and (k in FORWARDED_ENV or k in extra or k.startswith(prefixes))}


def requires_gpu(spec: StageSpec) -> bool:
    """A stage requires a GPU when its config says ``require_gpu: true`` or names a CUDA device."""
    cfg = spec.config
    return bool(cfg.get("require_gpu")) or str(cfg.get("device") or "").startswith("cuda")


def _threads(cpus: float) -> int:
    return max(1, int(cpus))


# ---------------------------------------------------------------- code that runs on Ray workers


def _run_shard_task(spec: StageSpec, task: ShardTask, threads: int) -> ShardSummary:
    """One shard as one Ray task: build, set up, run (the stage is stateless and cheap to build)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    stage = build_stage(spec)
    stage.setup()
    return run_shard(stage, spec, task)


class _StageActor:
    """Holds one set-up stage (a loaded model) and runs shards on it, one at a time."""

    def __init__(self, spec: StageSpec, threads: int) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        self.spec = spec
        self.init_error: BaseException | None = None
        try:
            self.stage = build_stage(spec)
            self.stage.setup()
        except Exception as exc:  # noqa: BLE001 - reported through every call, with its message
            self.init_error = exc

    def run(self, task: ShardTask) -> ShardSummary:
        if self.init_error is not None:
            raise self.init_error
        return run_shard(self.stage, self.spec, task)


# ---------------------------------------------------------------- driver


@dataclass
class _InFlight:
    task: ShardTask
    actor: Any = None  # (pool index, generation) of the actor running it (gpu stages)


class RayExecutor:
    def __init__(self, workers: int | None = None, *, max_attempts: int = 3, address: str | None = None,
                 wait_timeout_s: float = 3600.0, forward_env: tuple[str, ...] = ()) -> None:
        self.workers = workers
        self.forward_env = forward_env
        self.max_attempts = max(1, max_attempts)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.wait_timeout_s = wait_timeout_s

    # ------------------------------------------------------------ connection

    def _connect(self, spec: StageSpec) -> Any:
        ray = _ray()
        if ray.is_initialized():
            return ray
        env = forwarded_env(os.environ, self.forward_env)
        runtime_env = {"env_vars": env} if env else None
        common = dict(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
                      configure_logging=False)
        try:
            if self.address:
                log.info("ray: connecting to %s", self.address)
                ray.init(address=self.address, **common)
            else:
                temp_dir = self._local_temp_dir(run_path(spec.run_dir))
                log.info("ray: starting a local Ray (temp dir %s)", temp_dir)
                ray.init(address="local", num_cpus=self.workers, _temp_dir=str(temp_dir), **common)
                atexit.register(_stop_local_ray, ray, temp_dir)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local Ray"
            hint = (" (Ray >= 2.60 uses token auth: set RAY_AUTH_MODE=disabled on the head and here, or use a token)"
                    if self.address else "")
            raise RayUnavailable(f"ray: cannot connect to {where}: {exc}{hint}") from exc
        return ray

    @staticmethod
    def _local_temp_dir(run_dir: RunPath) -> Path:
        """Under the run's local folder when its path is short enough for Ray's unix sockets
        (~107 bytes including Ray's ~60-byte session suffix), else a fresh folder under TMPDIR."""
        candidate = local_dir(run_dir).resolve() / ".ray"
        if len(str(candidate)) <= 40:
            candidate.mkdir(parents=True, exist_ok=True)
            return candidate
        return Path(tempfile.mkdtemp(prefix="blift-ray-"))

    def _check_resources(self, ray: Any, spec: StageSpec, resources: str) -> tuple[float, float]:
        """(cpus, gpus) of the cluster; refuses up front what it can never schedule."""
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        if resources == "gpu" and requires_gpu(spec) and gpus < 1:
            raise BliftError(
                f"stage {spec.stage_name}: requires a GPU (require_gpu / device: cuda) but the Ray cluster has "
                f"no GPU resource (cluster resources: CPU={cpus:g}, GPU={gpus:g}); add a GPU node or set device: auto")
        needed = ACTOR_CPUS if resources == "gpu" else 1.0
        if cpus < needed:
            raise BliftError(f"stage {spec.stage_name}: needs {needed:g} CPU per worker but the Ray cluster has "
                             f"CPU={cpus:g}")
        return cpus, gpus

    # ------------------------------------------------------------ run

    def run(self, spec: StageSpec, tasks: list[ShardTask], on_done: Callable[[ShardSummary], None],
            on_failed: Callable[[ShardFailure], None], *, resources: str = "cpu") -> None:
        if not tasks:
            return
        ray = self._connect(spec)
        cpus, gpus = self._check_resources(ray, spec, resources)
        if resources == "gpu":
            self._run_actors(ray, spec, tasks, on_done, on_failed, cpus, gpus)
        else:
            self._run_tasks(ray, spec, tasks, on_done, on_failed, cpus)

    def _run_tasks(self, ray: Any, spec: StageSpec, tasks: list[ShardTask], on_done: Callable[[ShardSummary], None],
                   on_failed: Callable[[ShardFailure], None], cpus: float) -> None:
        workers = max(1, min(self.workers or int(cpus) or 1, len(tasks)))
        remote = ray.remote(_run_shard_task).options(
            num_cpus=1, max_retries=self.max_attempts - 1, retry_exceptions=False,
            name=f"blift:{spec.stage_name}")
        threads = _threads(cpus / workers)

        def submit(task: ShardTask) -> tuple[Any, None]:
            return remote.remote(spec, task, threads), None

        self._drive(ray, spec, tasks, on_done, on_failed, submit, max_in_flight=workers * 2, on_dead=None)

    def _run_actors(self, ray: Any, spec: StageSpec, tasks: list[ShardTask], on_done: Callable[[ShardSummary], None],
                    on_failed: Callable[[ShardFailure], None], cpus: float, gpus: float) -> None:
        default = int(gpus) if gpus >= 1 else max(1, int(cpus))
        n = max(1, min(self.workers or default, len(tasks)))
        num_gpus = 1 if gpus >= 1 else 0
        threads = _threads(cpus / n)
        actor_cls = ray.remote(_StageActor).options(num_cpus=ACTOR_CPUS, num_gpus=num_gpus, max_restarts=0,
                                                    max_task_retries=0)
        actors: list[Any] = [actor_cls.remote(spec, threads) for _ in range(n)]
        generation = [0] * n  # bumped when an actor is replaced: its old queued calls fail too
        load = [0] * n
        log.info("%s: %d actor(s), %s GPU each", spec.stage_name, n, num_gpus)

        def submit(task: ShardTask) -> tuple[Any, tuple[int, int]]:
            i = min(range(n), key=lambda k: load[k])
            load[i] += 1
            return actors[i].run.remote(task), (i, generation[i])

        def finished(slot: tuple[int, int] | None) -> None:
            if slot is not None and slot[1] == generation[slot[0]]:
                load[slot[0]] -= 1

        def on_dead(slot: tuple[int, int] | None) -> None:
            """An actor died (its process crashed): a fresh one takes its place, once."""
            if slot is None or slot[1] != generation[slot[0]]:
                return  # another call queued on the same dead actor already replaced it
            i = slot[0]
            generation[i] += 1
            load[i] = 0
            ray.kill(actors[i], no_restart=True)
            actors[i] = actor_cls.remote(spec, threads)
            log.warning("%s: actor %d died; replaced", spec.stage_name, i)

        try:
            self._drive(ray, spec, tasks, on_done, on_failed, submit, max_in_flight=n * CALLS_PER_ACTOR,
                        on_dead=on_dead, finished=finished)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def _drive(self, ray: Any, spec: StageSpec, tasks: list[ShardTask], on_done: Callable[[ShardSummary], None],
               on_failed: Callable[[ShardFailure], None], submit: Callable[[ShardTask], tuple[Any, Any]],
               *, max_in_flight: int, on_dead: Callable[[Any], None] | None,
               finished: Callable[[Any], None] | None = None) -> None:
        """Submit, wait (always with a timeout), count attempts, retry or fail, as LocalExecutor."""
        from ray.exceptions import (
            GetTimeoutError,
            RayActorError,
            RayTaskError,
            WorkerCrashedError,
        )

        pending = list(reversed(tasks))  # pop() from the end keeps submission order
        attempts: dict[str, int] = {t.shard: 0 for t in tasks}
        in_flight: dict[Any, _InFlight] = {}
        last_progress = time.monotonic()
        try:
            while pending or in_flight:
                while pending and len(in_flight) < max_in_flight:
                    task = pending.pop()
                    attempts[task.shard] += 1
                    ref, slot = submit(task)
                    in_flight[ref] = _InFlight(task, slot)
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
                if not ready:
                    if time.monotonic() - last_progress > self.wait_timeout_s:
                        raise BliftError(
                            f"stage {spec.stage_name}: no shard finished on the Ray cluster "
                            f"for {self.wait_timeout_s:g} s ({len(in_flight)} in flight); "
                            f"is a node with the resources it needs alive? "
                            f"(cluster resources now: {ray.available_resources()})")
                    continue
                last_progress = time.monotonic()
                for ref in ready:
                    item = in_flight.pop(ref)
                    if finished:
                        finished(item.actor)
                    try:
                        summary = ray.get(ref, timeout=max(POLL_S, 60.0))
                    except RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, BliftError):
                            raise cause from None
                        err = cause if isinstance(cause, BaseException) else exc
                        retry_or_fail(item.task, attempts, pending, self.max_attempts, on_failed, type(err).__name__,
                                      str(err))
                    except WorkerCrashedError as exc:  # Ray already re-ran it max_retries times
                        attempts[item.task.shard] = max(attempts[item.task.shard], self.max_attempts)
                        retry_or_fail(item.task, attempts, pending, self.max_attempts, on_failed, "WorkerCrashedError",
                                      f"a Ray worker process died while this shard was in flight: {exc}")
                    except RayActorError as exc:
                        if on_dead:
                            on_dead(item.actor)
                        retry_or_fail(item.task, attempts, pending, self.max_attempts, on_failed, type(exc).__name__,
                                      f"the Ray actor running this shard died: {exc}")
                    except GetTimeoutError as exc:  # pragma: no cover - a ready ref is already local
                        retry_or_fail(item.task, attempts, pending, self.max_attempts, on_failed, "GetTimeoutError",
                                      str(exc))
                    else:
                        on_done(summary)
        finally:
            for ref in in_flight:  # a BliftError (or Ctrl-C) ends the run: stop what is still running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - actor calls cannot be force-cancelled; the actors are killed
                    pass


def _stop_local_ray(ray: Any, temp_dir: Path) -> None:
    """At exit: stop the Ray this process started, then remove its session files (logs, sockets)."""
    if ray.is_initialized():
        ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
