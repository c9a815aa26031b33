"""Ray fan-out: the only module that imports `ray` (an optional extra: `pip install 'moeprint[ray]'`).

`run_units` starts a pool of Ray actors (each builds one worker object, e.g. a loaded model) and hands
them small units of work one at a time, pulling the next unit as soon as a worker is free. A unit whose
actor dies (killed, node lost) goes back to the front of the queue and is redone by the next free worker;
Ray restarts the dead actor (up to MAX_RESTARTS times), which rejoins after its `hello` succeeds again.
Each unit is counted once, when its first result arrives, so nothing is lost or counted twice; workers
make units idempotent (a redone unit writes the same bytes).

A worker class needs `hello() -> WorkerHello` (called after construction, again after every restart)
and `run(unit) -> UnitResult`. The driver checks every hello (e.g. the model hash) before giving work.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.progress import Progress

MAX_RESTARTS = 3  # per actor; a worker that dies more often is given up (its units go to the others)
DELAY_ENV = "MOEPRINT_RAY_UNIT_DELAY"  # seconds a worker sleeps after each unit (tests kill a worker mid-unit)
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how wide to fan out. `address` None: Ray's default (RAY_ADDRESS, else the cluster last
    started on this machine, else a new local instance); also HOST:PORT, ray://HOST:PORT, auto, local."""

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def check(self) -> ClusterSettings:
        if self.workers < 1:
            raise MoeprintError("--workers must be at least 1.")
        if self.gpus_per_worker < 0:
            raise MoeprintError("--gpus-per-worker must be 0 or more.")
        return self

    @property
    def device(self) -> str:
        """What a worker loads its model onto: its GPU(s) when it asked for them, else the CPU."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"


@dataclass(frozen=True)
class WorkerHello:
    """What a worker reports once ready: where it runs, and what it sees (checked by the driver)."""

    node: str
    pid: int
    model_sha256: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitResult:
    value: Any
    tokens: int = 0  # for the driver's tokens/s


@dataclass(frozen=True)
class PoolEvent:
    """One thing that happened in the pool (`kind`: ready, done, lost, dead), for progress and tests."""

    kind: str
    worker: int
    actor_name: str
    unit: Hashable | None = None


def ray_module():
    try:
        import ray
    except ImportError:
        raise MoeprintError("--ray needs the Ray package: pip install 'moeprint[ray]'.") from None
    return ray


def node_name() -> str:
    return socket.gethostname()


def check_address(address: str | None) -> None:
    """One clear error, fast, for an address nothing listens on (Ray itself retries for minutes)."""
    if address is None or address in ("auto", "local"):
        return
    m = re.fullmatch(r"(?:ray://)?\[?([^\]\s/]+?)\]?:(\d{1,5})", address.strip())
    if not m:
        raise MoeprintError(f"--ray {address!r} is not a Ray address (HOST:PORT, ray://HOST:PORT, auto or local).")
    host, port = m.group(1), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        reason = e.strerror or e.__class__.__name__
        raise MoeprintError(
            f"cannot reach the Ray cluster at {address} ({reason}); is `ray start --head` running "
            "there and the port open?"
        ) from None


@contextmanager
def connected(settings: ClusterSettings) -> Iterator[Any]:
    """Ray, connected, with resources for `settings` (checked before the caller writes anything). Reuses a
    connection the caller already made (tests); otherwise connects (or starts a local instance) and
    disconnects afterwards."""
    ray = ray_module()
    if ray.is_initialized():
        check_resources(ray, settings)
        yield ray
        return
    check_address(settings.address)
    try:
        ray.init(
            address=settings.address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env={"env_vars": _forwarded_env()},
        )
    except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError ... for a bad cluster
        raise MoeprintError(
            f"cannot connect to the Ray cluster at {settings.address or 'a new local instance'} "
            f"({e.__class__.__name__}: {(str(e).splitlines() or [''])[0][:200]})."
        ) from None
    try:
        check_resources(ray, settings)
        yield ray
    finally:
        ray.shutdown()


def _forwarded_env() -> dict[str, str]:
    """Environment workers need to import the same moeprint as the driver (an uninstalled checkout)."""
    return {k: os.environ[k] for k in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}


def check_resources(ray, settings: ClusterSettings) -> None:
    """Fail early for a request no node can ever satisfy (Ray would leave the actors pending forever)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
    cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
    if settings.gpus_per_worker > 0 and not any(g > 0 for g in gpus):
        raise MoeprintError(
            f"--gpus-per-worker {settings.gpus_per_worker:g} asks for GPUs, but the Ray cluster "
            f"has none ({len(nodes)} node(s), {sum(cpus):g} CPUs); drop the option to run on CPUs."
        )
    if settings.gpus_per_worker > max(gpus, default=0):
        raise MoeprintError(
            f"--gpus-per-worker {settings.gpus_per_worker:g}: no node of the Ray cluster has that "
            f"many GPUs (the most on one node: {max(gpus, default=0):g})."
        )
    if settings.cpus_per_worker > max(cpus, default=0):
        raise MoeprintError(
            f"a worker needs {settings.cpus_per_worker:g} CPU(s), but no node of the Ray cluster has that many."
        )


def run_units(
    settings: ClusterSettings,
    worker_cls: type,
    args: tuple,
    units: Sequence[Hashable],
    check_hello: Callable[[int, WorkerHello], None],
    *,
    label: str,
    progress: bool = True,
    observer: Callable[[PoolEvent], None] | None = None,
) -> tuple[dict[Hashable, Any], list[WorkerHello]]:
    """Run every unit on a pool of `settings.workers` actors of `worker_cls(*args)`.
    Returns (unit -> result value, the workers' hellos). Call inside `connected`."""
    ray = ray_module()
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    lost_errors = (RayActorError, ActorDiedError, ActorUnavailableError)
    remote_host = ray.remote(_Host)
    job = uuid.uuid4().hex[:8]
    names = [f"moeprint-{label}-{job}-w{i}" for i in range(settings.workers)]
    actors = [
        remote_host.options(
            name=name,
            num_cpus=settings.cpus_per_worker,
            num_gpus=settings.gpus_per_worker,
            max_restarts=MAX_RESTARTS,
            max_task_retries=0,
        ).remote(worker_cls, *args)
        for name in names
    ]
    todo = list(dict.fromkeys(units))
    queue = list(todo)
    results: dict[Hashable, Any] = {}
    hellos: list[WorkerHello | None] = [None] * len(actors)
    pending: dict[Any, tuple[int, Hashable | None]] = {}  # future -> (worker, unit; None for a hello)
    display = PoolProgress(label, len(todo), names, enabled=progress)

    def emit(kind: str, worker: int, unit: Hashable | None = None) -> None:
        event = PoolEvent(kind, worker, names[worker], unit)
        display.update(event)
        if observer:
            observer(event)

    idle: set[int] = set()  # ready workers with nothing to do (woken when a lost unit is requeued)
    hello_failures = [0] * len(actors)

    def give(worker: int) -> None:
        idle.discard(worker)
        while queue and queue[0] in results:
            queue.pop(0)
        if queue:
            unit = queue.pop(0)
            pending[actors[worker].run.remote(unit)] = (worker, unit)
            display.working(worker, unit)
        else:
            idle.add(worker)
            display.idle(worker)

    def say_hello(worker: int) -> None:
        pending[actors[worker].hello.remote()] = (worker, None)

    for i in range(len(actors)):
        say_hello(i)
    try:
        with display:
            # The caller needs at least one worker's view (hello) even when no unit is left to do.
            while len(results) < len(todo) or not any(hellos):
                if not pending:
                    raise MoeprintError(
                        f"every Ray worker died ({len(results)} of {len(todo)} units done); "
                        "rerun the same command to continue."
                    )
                done, _ = ray.wait(list(pending), num_returns=1)
                worker, unit = pending.pop(done[0])
                try:
                    value = ray.get(done[0])
                except lost_errors:
                    hellos[worker] = None
                    if unit is None:
                        hello_failures[worker] += 1
                        if hello_failures[worker] > MAX_RESTARTS:  # its restarts are used up: give it up
                            emit("dead", worker)
                        else:
                            say_hello(worker)
                        continue
                    emit("lost", worker, unit)
                    if unit not in results:
                        queue.insert(0, unit)  # redone by the next free worker
                        for other in sorted(idle):
                            give(other)
                    say_hello(worker)  # rejoins once Ray has restarted it
                    continue
                except ray.exceptions.RayTaskError as e:
                    raise MoeprintError(_task_error(names[worker], unit, e)) from None
                first_result = unit is not None and unit not in results
                if unit is None:
                    check_hello(worker, value)
                    hellos[worker] = value
                elif first_result:
                    results[unit] = value.value
                    display.tokens(value.tokens)
                give(worker)  # before telling observers: the worker is never idle while work is queued
                if unit is None or first_result:
                    emit("ready" if unit is None else "done", worker, unit)
    finally:
        _stop(ray, actors)
    return results, [h for h in hellos if h]


class _Host:
    """The actor: builds the worker, keeping a construction error for `hello` to raise (Ray would
    otherwise only report a dead actor, and restart it in vain)."""

    def __init__(self, worker_cls: type, *args: Any):
        self.worker, self.error = None, None
        self.delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        try:
            self.worker = worker_cls(*args)
        except Exception as e:
            self.error = e

    def hello(self) -> WorkerHello:
        if self.error is not None:
            raise self.error
        return self.worker.hello()

    def run(self, unit: Hashable) -> UnitResult:
        result = self.worker.run(unit)
        if self.delay:
            time.sleep(self.delay)
        return result


def _stop(ray, actors) -> None:
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass


def _task_error(name: str, unit: Hashable | None, e: Exception) -> str:
    cause = getattr(e, "cause", None)
    if isinstance(cause, MoeprintError):
        return str(cause)
    what = f"unit {unit}" if unit is not None else "start-up"
    detail = f"{cause.__class__.__name__}: {str(cause).splitlines()[0][:200]}" if cause else str(e).splitlines()[0]
    return f"Ray worker {name} failed on {what} ({detail})."


class PoolProgress:
    """The driver's view: units done, tokens/s, and each worker's state (rich, on stderr)."""

    def __init__(self, label: str, total: int, names: Sequence[str], enabled: bool = True):
        self.enabled = enabled
        self.label, self.total, self.names = label, total, list(names)
        self.n_tokens, self.start = 0, None  # the rate counts from the first ready worker (not start-up)
        self.states = ["starting"] * len(names)
        self.counts = [0] * len(names)
        self._bar: Progress | None = None

    def __enter__(self) -> PoolProgress:
        if self.enabled:
            self._bar = Progress().__enter__()
            self._main = self._bar.task(f"{self.label} units", self.total)
            self._workers = [self._bar.task(f"  worker {i}", None, "starting") for i in range(len(self.names))]
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _show(self, worker: int | None = None) -> None:
        if self._bar is None:
            return
        rate = self.n_tokens / max(time.monotonic() - self.start, 1e-9) if self.start else 0.0
        self._main.update(completed=sum(self.counts), status=f"{rate:,.0f} tokens/s")
        if worker is not None:
            self._workers[worker].update(
                completed=self.counts[worker], status=f"{self.states[worker]} ({self.counts[worker]} done)"
            )

    def tokens(self, n: int) -> None:
        self.n_tokens += n

    def working(self, worker: int, unit: Hashable) -> None:
        self.states[worker] = f"unit {unit}"
        self._show(worker)

    def idle(self, worker: int) -> None:
        self.states[worker] = "idle"
        self._show(worker)

    def update(self, event: PoolEvent) -> None:
        if event.kind == "done":
            self.counts[event.worker] += 1
        elif event.kind == "lost":
            self.states[event.worker] = "lost, restarting"
        elif event.kind == "ready":  # its state already says what it was given
            self.start = self.start or time.monotonic()
        elif event.kind == "dead":
            self.states[event.worker] = "dead (given up)"
        self._show(event.worker)
