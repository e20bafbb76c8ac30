"""The Ray engine of corpus runs: Ray Data reads the input, a pool of Ray workers explains and writes shards.

The run connects to an existing cluster (``ray_address``, else ``RAY_ADDRESS``) or, when none is given,
starts a local one for itself. Each worker loads the model itself (from its path or hub id; a model object
given to the API goes once through the object store), explains batches and writes its own shards and record
files into the run directory, which every node must see at the same path (shared storage). Only small
metadata (ids, shard names, errors) comes back to the driver.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import AttnPluginsError, CorpusError, InputError
from .texts import Example, parse_lines
from .worker import CorpusWorker, WorkerSpec

PROBE_SECONDS = 3.0
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0
_HINT = "start one with `ray start --head`, fix --ray-address / RAY_ADDRESS, or unset it to run a local cluster"


def _split(address: str) -> tuple[str, int]:
    if address.startswith("ray://"):
        raise InputError(
            f"{address}: ray:// is the Ray Client, not a cluster address; give the head's host:port "
            "(what `ray start --head` prints, port 6379 by default)"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"Ray address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise InputError within ``timeout`` seconds unless a Ray head (a gRPC server) answers at ``address``.

    ``ray.init`` retries an unreachable address for minutes; the head's GCS is a gRPC server, which answers
    the HTTP/2 client preface with a SETTINGS frame, so a wrong host, a closed port or another service shows
    at once.
    """
    host, port = _split(address)
    deadline = time.monotonic() + timeout
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: unknown host {host!r}; {_HINT}") from exc
    reason = "no address"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(max(deadline - time.monotonic(), 0.1))
                s.connect(sockaddr)
                s.sendall(_H2_PREFACE + _H2_EMPTY_SETTINGS)
                head = s.recv(9)
        except TimeoutError:
            reason = f"no answer within {timeout:g}s"
            continue
        except OSError as exc:  # refused, reset, unreachable
            reason = exc.strerror or str(exc)
            continue
        if len(head) == 9 and head[3] == 0x04:  # the server's first frame is SETTINGS
            return
        raise InputError(f"{address} answers but is not a Ray cluster (no gRPC reply); check the port")
    raise InputError(f"cannot reach the Ray cluster at {address}: {reason}; {_HINT}")


@contextlib.contextmanager
def _silent_stderr() -> Iterator[None]:
    """Ray's C++ client logs each failed call to file descriptor 2; the caller reports it as one line instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_token(address: str) -> None:
    """Raise InputError at once when the cluster at ``address`` refuses this driver's authentication token.

    A cluster started with token authentication (``RAY_AUTH_MODE=token``) refuses a driver without its token;
    ``ray.init`` then retries for about 25 s and says only "Failed to connect". One call of Ray's own GCS
    client, with the token ``ray.init`` would send, tells within a second.
    """
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # no Ray (the engine says so), or a Ray without token authentication
        return
    try:
        with _silent_stderr():
            GcsClient(address=address)
    except AuthenticationError as exc:
        reason = (str(exc).strip().splitlines() or ["token refused"])[0]
        raise InputError(
            f"the Ray cluster at {address} refused this driver's authentication token ({reason}); it runs with "
            "token authentication: give the driver the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token) with RAY_AUTH_MODE=token"
        ) from None
    except Exception:  # anything else is ray.init's to report, as before
        return


def cluster_address(ray_address: str | None) -> str | None:
    """The cluster a run connects to: the argument, else ``RAY_ADDRESS``; None means a local cluster."""
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def connect(ray_address: str | None, num_workers: int, num_gpus_per_worker: float) -> bool:
    """Connect to the run's cluster, or start a local one; True when this call started Ray (stop it after)."""
    import ray

    if ray.is_initialized():  # the caller's own session
        return False
    address = cluster_address(ray_address)
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        # A private cluster on this machine: one CPU per worker plus one for reading the input.
        ray.init(
            address="local",
            num_cpus=num_workers + 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **quiet,
        )
        return True
    if address != "auto":
        probe(address)
        check_token(address)
    try:
        # No num_cpus/num_gpus here: ray.init refuses them when it connects to a running cluster.
        ray.init(address=address, **quiet)
    except ConnectionError as exc:
        raise InputError(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    return True


def _check_resources(num_workers: int, num_gpus_per_worker: float) -> None:
    import ray

    total = ray.cluster_resources()
    if total.get("CPU", 0) < 1:
        raise InputError("the Ray cluster has no CPU for a worker")
    if num_gpus_per_worker and total.get("GPU", 0) < num_gpus_per_worker:
        raise InputError(
            f"each worker asks for {num_gpus_per_worker:g} GPU but the Ray cluster has {total.get('GPU', 0):g}; "
            "start the nodes with GPUs (ray start --num-gpus) or drop --num-gpus-per-worker"
        )


def _parse_file(row: dict[str, Any], source: str, done: dict[str, str]) -> list[dict[str, Any]]:
    """The rows of the input file (``row["bytes"]``) with their status: pending, done, or a problem."""

    def problem(message: str) -> list[dict[str, Any]]:
        return [{"id": "", "text": "", "line": 0, "status": "problem", "message": message}]

    try:
        examples = list(parse_lines(row["bytes"], source))
    except InputError as exc:
        return problem(str(exc))
    if not examples:
        return problem(f"{source}: holds no texts")
    out = []
    for e in examples:
        status, message = "pending", ""
        if e.id in done:
            status = "done"
            if done[e.id] != e.text_sha1:
                status, message = (
                    "problem",
                    f"{source}:{e.line}: the text of id {e.id!r} changed since it was explained",
                )
        out.append({"id": e.id, "text": e.text, "line": e.line, "status": status, "message": message})
    return out


class RayWorker:
    """A Ray Data actor: a :class:`CorpusWorker` that reports one metadata row per example it was given."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = CorpusWorker(spec)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain one batch of ``id``/``text``/``line`` columns into a shard; return ids, errors and timings."""
        examples = [Example(str(i), str(t), int(n)) for i, t, n in zip(batch["id"], batch["text"], batch["line"])]
        result = self.worker.process(examples)
        errors = {e["id"]: e["error"] for e in result["errors"]}
        ids = [e.id for e in examples]
        n = len(ids)
        return {
            "id": np.array(ids, dtype=object),
            "line": np.array([e.line for e in examples], dtype=np.int64),
            "error": np.array([errors.get(i, "") for i in ids], dtype=object),
            "shard": np.array([result["shard"] or ""] * n, dtype=object),
            "worker": np.array([self.name] * n, dtype=object),
            "started": np.full(n, result["started"]),
            "ended": np.full(n, result["ended"]),
            "load_seconds": np.full(n, self.worker.load_seconds),
            # Batches split for lack of device memory (the same on every row of one input batch).
            "batches_split": np.full(n, result["batches_split"], dtype=np.int64),
            "smallest_batch": np.full(n, result["smallest_batch"] or 0, dtype=np.int64),
        }


_REMOTE_ERROR = re.compile(r"attn_plugins\.errors\.(\w+): (.+)$", flags=re.M)


def _cause(exc: BaseException) -> BaseException:
    """The package error behind a Ray error, else the first one with a message.

    Task errors wrap the original exception; a worker that fails while starting (its model cannot load)
    reaches the driver only as text (ActorDiedError), from which the package error is rebuilt.
    """
    from .. import errors

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not c for c in chain):
        if isinstance(current, AttnPluginsError):
            return current
        chain.append(current)
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    for link in chain:
        found = _REMOTE_ERROR.findall(str(link))
        if found:
            name, message = found[-1]
            cls = getattr(errors, name, None)
            if isinstance(cls, type) and issubclass(cls, AttnPluginsError):
                try:
                    return cls(message.strip())
                except TypeError:  # an error class that takes more than a message
                    return InputError(message.strip())
    return next((c for c in chain if str(c).strip()), exc)


def ray_engine(
    spec: WorkerSpec,
    location: str,
    done: dict[str, str],
    shard_size: int,
    num_workers: int,
    ray_address: str | None,
    num_gpus_per_worker: float,
) -> tuple[int, int, Iterator[dict[str, Any]]]:
    """(examples in the input, examples to explain, the stream of written batches) of a Ray run."""
    try:
        import ray
    except ImportError:
        raise InputError("engine='ray' needs Ray: pip install 'attn-plugins[ray]'") from None
    started = connect(ray_address, num_workers, num_gpus_per_worker)
    try:
        _check_resources(num_workers, num_gpus_per_worker)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver draws one bar over the whole corpus
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # failures arrive as exceptions
        ds = ray.data.read_binary_files(location)
        ds = ds.flat_map(_parse_file, fn_kwargs={"source": location, "done": done}).materialize()
        problems = ds.filter(expr="status == 'problem'").take(1)
        if problems:
            raise InputError(problems[0]["message"])
        total = ds.count()
        pending = ds.filter(expr="status == 'pending'").select_columns(["id", "text", "line"])
        pending = pending.materialize()
        count = pending.count()
    except Exception as exc:
        if started:
            ray.shutdown()
        cause = _cause(exc)
        if isinstance(cause, AttnPluginsError):
            raise cause from None
        raise
    return total, count, _stream(spec, pending, count, shard_size, num_workers, num_gpus_per_worker, started)


def _stream(
    spec: WorkerSpec,
    pending: Any,
    count: int,
    shard_size: int,
    num_workers: int,
    num_gpus_per_worker: float,
    started: bool,
) -> Iterator[dict[str, Any]]:
    import ray

    try:
        if count == 0:
            return
        # Several shards per worker, so the pool shares the work out; at most shard_size examples per shard.
        rows = max(1, min(shard_size, math.ceil(count / (4 * num_workers))))
        # Blocks of one shard each, in the object store before the pool starts: with as many workers as CPUs
        # a still-lazy read or split would get no CPU and the run would wait forever.
        pending = pending.repartition(math.ceil(count / rows)).materialize()
        source = spec.source
        if source.name is None and source.shared is None:
            # A model object: through the object store once (in a list, so workers receive the reference).
            source = replace(source, model=None, tokenizer=None, shared=[ray.put((source.model, source.tokenizer))])
        worker_spec = replace(spec, source=source, threads=1, device="cuda" if num_gpus_per_worker else None)
        out = pending.map_batches(
            RayWorker,
            fn_constructor_kwargs={"spec": worker_spec},
            batch_size=rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_cpus=1,
            num_gpus=num_gpus_per_worker or None,
        )
        try:
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                ids, errors, shards = [], [], set()
                for i, line, error, shard in zip(batch["id"], batch["line"], batch["error"], batch["shard"]):
                    if error:
                        errors.append({"id": str(i), "line": int(line), "error": str(error)})
                    else:
                        ids.append(str(i))
                        shards.add(str(shard))
                # One per input batch, with what splitting did in it.
                runs = set(
                    zip(
                        batch["worker"],
                        batch["started"],
                        batch["ended"],
                        batch["batches_split"],
                        batch["smallest_batch"],
                    )
                )
                span = {
                    "started": float(batch["started"].min()),
                    "ended": float(batch["ended"].max()),
                    "busy": sum(float(e) - float(s) for _, s, e, _, _ in runs),
                    "batches_split": sum(int(n) for *_, n, _ in runs),
                    "smallest_batch": min((int(m) for *_, m in runs if m), default=None),
                }
                for shard in sorted(shards) or [None]:
                    yield {"shard": shard, "ids": ids, "errors": errors, **span}
                    # The batch's counts, seconds and splits, once.
                    ids, errors, span["busy"], span["batches_split"] = [], [], 0.0, 0
        except Exception as exc:
            cause = _cause(exc)
            if isinstance(cause, AttnPluginsError):
                raise cause from None
            raise CorpusError(f"the Ray run stopped: {type(cause).__name__}: {cause}") from exc
    finally:
        if started:  # a cluster this run started is not left running; one the caller connected to stays
            ray.shutdown()
