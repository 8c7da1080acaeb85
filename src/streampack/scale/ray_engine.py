"""The Ray engine: every unit is a Ray task; a bounded number are in flight; Ray retries failures.

A task loads the tokenizer once per worker process (`unit.loaded_encoder`), packs its unit and
writes its shards straight into the store folder, which must therefore be a path every node sees
(a shared file system). What comes back to the driver is small: counts, the shard list and fewer
than `block_size` leftover tokens.
"""

import logging
import os
from collections.abc import Iterator

from ..errors import ConfigError, StreampackError
from .split import Unit
from .unit import UnitJob, run_unit

log = logging.getLogger(__name__)

# Ray reruns a task this many times after a crash or an exception (the attempt markers count
# them for the report's `retries`).
MAX_RETRIES = 3
# Ray gives a machine its outward address and binds its servers to every interface unless it
# runs without clustering (its default on macOS and Windows); then all of them bind to 127.0.0.1.
# Measured with `ss -ltnp` on Ray 2.60: without this, raylet and GCS listened on `*`.
_NO_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class UnitFailed(StreampackError):
    """A unit that failed on every attempt Ray made."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray: pip install 'streampack[ray]' (or pip install ray)"
        ) from None
    return ray


def connect(address: str | None, num_cpus: int | None):
    """Ray, initialized: the cluster at `address`, else a new local instance bound to loopback.

    Returns `(ray, owned)`; `owned` is True when this call connected, so the caller shuts it down.
    A Ray already initialized by the caller (a notebook, the tests) is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except Exception as error:  # Ray raises ConnectionError, ValueError, RuntimeError...
            raise ConfigError(
                f"--ray-address {address}: cannot connect to a Ray cluster there "
                f"({str(error).strip().splitlines()[-1] if str(error).strip() else error!r}); "
                f"start it with `ray start --head`, or leave --ray-address out for a local one"
            ) from None
        return ray, True
    _no_cluster(True)
    log.info("starting a local Ray instance on 127.0.0.1 (%s CPUs)", num_cpus or "all")
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    except BaseException:
        _no_cluster(False)
        raise
    address = ray.util.get_node_ip_address()
    if address not in ("127.0.0.1", "::1"):
        log.warning("the local Ray instance listens on %s, not only on loopback", address)
    return ray, True


_saved: list = []


def _no_cluster(on: bool) -> None:
    """Turn Ray's single-machine mode on (for a local instance), or back to what it was."""
    from ray._private import ray_constants

    if on:
        _saved[:] = [os.environ.get(_NO_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER]
        # The environment reaches the processes Ray starts; the constant, this one.
        os.environ[_NO_CLUSTER_ENV] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    elif _saved:
        env, constant = _saved
        if env is None:
            os.environ.pop(_NO_CLUSTER_ENV, None)
        else:
            os.environ[_NO_CLUSTER_ENV] = env
        ray_constants.ENABLE_RAY_CLUSTER = constant
        _saved.clear()


def disconnect(ray) -> None:
    """Shut down what `connect` started or joined."""
    ray.shutdown()
    _no_cluster(False)


class RayRunner:
    """Runs units as Ray tasks of `task_cpus` CPUs each; yields results as they finish.

    `stop_after`, when set, stops submitting units past that index (an error was met there).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        task_cpus: int = 1,
        max_in_flight: int | None = None,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.ray, self._owned = connect(address, num_cpus)
        self.task_cpus = task_cpus
        self.max_retries = max_retries
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        # Two tasks per slot keep every CPU busy while results travel back to the driver.
        self.max_in_flight = max_in_flight or max(2, 2 * cpus // task_cpus)
        self.stop_after: int | None = None
        log.info(
            "ray: %d CPUs, tasks of %d CPU, up to %d in flight", cpus, task_cpus, self.max_in_flight
        )

    def run(self, units: list[Unit], job: UnitJob) -> Iterator[dict]:
        ray = self.ray
        task = ray.remote(run_unit).options(
            num_cpus=self.task_cpus, max_retries=self.max_retries, retry_exceptions=True
        )
        shared = ray.put(job)
        pending: dict = {}
        queue = iter(units)
        try:
            while True:
                while len(pending) < self.max_in_flight:
                    unit = next(queue, None)
                    if unit is None or (
                        self.stop_after is not None and unit.index > self.stop_after
                    ):
                        queue = iter(())
                        break
                    pending[task.remote(unit, shared)] = unit
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as error:
                        raise UnitFailed(
                            f"{unit.describe()}: failed on {self.max_retries + 1} attempts; "
                            f"the last said: {_last_line(error)}"
                        ) from None
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owned:
            disconnect(self.ray)


def _last_line(error: Exception) -> str:
    cause = getattr(error, "cause", None)
    text = str(cause if cause is not None else error).strip().splitlines()
    return text[-1] if text else type(error).__name__
