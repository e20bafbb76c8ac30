"""Corpus runs on Ray: a real cluster started with ``ray start --head`` on loopback (stopped afterwards, also
when a test fails), reached through RAY_ADDRESS, gives the local engine's results; a run resumes across
engines; an unreachable address is one line at once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.noise import capture_tolerance, explain_tolerance
from helpers.ray_cluster import ENV, cluster_pids, free_port, ray_head

import attn_plugins as ap
import attn_plugins.corpus.run as ds
from attn_plugins.corpus import load_errors, load_results
from attn_plugins.corpus.ray import probe
from attn_plugins.errors import CorpusError, InputError
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

pytest.importorskip("ray")

TEXTS = ["the movie was good", "a very bad film", "i liked the music", "boring plot", "what a great story"]
LONG = " ".join(["the movie was great and the book was very good"] * 8)  # 82 tokens: the tiny BERT takes 64
SUBPROCESS_ENV = {**os.environ, **ENV, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
CLI = str(Path(sys.executable).with_name("attn-plugins"))


def _cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def run_tolerances(texts: list[str]) -> tuple[float, float]:
    """Score and weight tolerances between a Ray run and a local run of the test model, from measured noise.

    The two runs batch texts differently and run in other processes with other thread counts: float32
    rounding alone moves scores by about 1e-6 (1.07e-6 seen with transformers 5.25). The bounds come from
    the float32-vs-float64 gap of the same computation: of the weights, and of the scores, which are computed
    from those weights (row-stochastic products and averages, so a weight error passes to a score at most
    undiminished): the score bound is the larger of the two.
    """
    import inspect

    method = inspect.signature(ds.run_corpus).parameters["method"].default
    model, tok = tiny_bert(num_labels=2), tiny_tokenizer("bert")
    weights = capture_tolerance(model, tok, texts)
    scores = explain_tolerance(model, tok, texts, method=method, special_tokens=True)
    return max(scores, weights), weights


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("attn-plugins: error:") or "Traceback" in line]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_bert(num_labels=2).save_pretrained(path)
    tiny_tokenizer("bert").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def head():
    """A Ray head of 2 CPUs on 127.0.0.1; afterwards no process of it may be left."""
    with ray_head(num_cpus=2) as h:
        yield h
    time.sleep(1)
    assert cluster_pids(str(h.temp_dir)) == [], "processes of the test cluster outlived it"


def test_unreachable_address_is_one_line_within_seconds(model_dir, tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    proc = _cli(
        "explain", "--input", src, "--out", tmp_path / "run", "--model", model_dir, "--engine", "ray",
        env={**SUBPROCESS_ENV, "RAY_ADDRESS": address}, timeout=120,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(
        f"attn-plugins: error: cannot reach the Ray cluster at {address}"
    )
    assert "ray start --head" in lines[0]
    assert seconds < 60, f"{seconds:.1f}s: ray.init alone retries an unreachable address for minutes"
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_token_the_cluster_refuses_is_one_line_within_seconds(model_dir, tmp_path) -> None:
    """A head with token authentication; drivers without its token, or with another, are told at once why."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n")
    token = "0123456789abcdef" * 2
    with ray_head(num_cpus=1, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as h:
        for driver in ({"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f" * 32}):
            started = time.monotonic()
            proc = _cli(
                "explain", "--input", src, "--out", tmp_path / "run", "--model", model_dir, "--engine", "ray",
                env={**SUBPROCESS_ENV, **driver, "RAY_ADDRESS": h.address}, timeout=120,
            )  # fmt: skip
            seconds = time.monotonic() - started
            assert proc.returncode == 2, proc.stderr[-2000:]
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, lines  # not Ray's retry log
            assert lines[0].startswith(f"attn-plugins: error: the Ray cluster at {h.address} refused this driver's")
            assert "RAY_AUTH_TOKEN" in lines[0]
            # The single line is what tells the fix from ray.init's own retries (21 lines, the cause buried);
            # the time only catches a hang: this machine is shared, a tight bound would time the machine.
            assert seconds < 90, f"{seconds:.1f}s: the refusal must come before ray.init retries"
            assert not (tmp_path / "run").exists()  # refused before anything was written
        # The cluster's own token passes the check (and the check alone starts nothing).
        code = f"from attn_plugins.corpus.ray import check_token; check_token({h.address!r}); print('ok')"
        env = {**SUBPROCESS_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_probe_tells_what_is_wrong_with_an_address() -> None:
    with pytest.raises(InputError, match="is not host:port"):
        probe("127.0.0.1")
    with pytest.raises(InputError, match="ray:// is the Ray Client"):
        probe("ray://127.0.0.1:10001")
    with pytest.raises(InputError, match="unknown host 'no-such-host.invalid'"):
        probe("no-such-host.invalid:6379")
    # A server that is not Ray: an HTTP/1 reply to the HTTP/2 preface.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(InputError, match="answers but is not a Ray cluster"):
            probe(f"127.0.0.1:{server.getsockname()[1]}")
        thread.join(5)
    # A listener that never answers: the probe gives up after its timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(InputError, match=r"no answer within 0.5s"):
            probe(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)


def test_cluster_run_through_ray_address_resumes_a_local_run_and_equals_it(model_dir, head, tmp_path, monkeypatch):
    """A local run is stopped after its first shard; the CLI resumes it on the cluster (RAY_ADDRESS); the
    over-long text fails in its worker without stopping the others; everything equals a clean local run."""
    src = tmp_path / "in.jsonl"
    texts = [*TEXTS[:3], LONG, *TEXTS[3:]]
    src.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    clean = tmp_path / "clean"
    with pytest.raises(CorpusError, match="t3"):
        ds.run_corpus(str(model_dir), None, src, clean, batch_size=2, shard_size=2, progress=False)

    out = tmp_path / "run"
    real = ds.CorpusWorker.process
    calls = []

    def stop_after_one(self, examples):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, examples)

    monkeypatch.setattr(ds.CorpusWorker, "process", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        ds.run_corpus(str(model_dir), None, src, out, batch_size=2, shard_size=2, progress=False)
    monkeypatch.undo()
    assert [r["id"] for r in load_results(out)] == ["t0", "t1"]

    proc = _cli(
        "explain", "--input", src, "--out", out, "--model", model_dir, "--engine", "ray", "--batch-size", "2",
        env={**SUBPROCESS_ENV, "RAY_ADDRESS": head.address},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = _error_lines(proc.stderr)
    assert "1 of 4 examples failed" in line and "in.jsonl:4 id 't3'" in line, line
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["engine"], summary["skipped"], summary["explained"], summary["failed"]) == ("ray", 2, 3, 1)
    assert [e["id"] for e in load_errors(out)] == ["t3"]

    ray_rows, local_rows = load_results(out), load_results(clean)
    assert [r["id"] for r in ray_rows] == [r["id"] for r in local_rows] == ["t0", "t1", "t2", "t4", "t5"]
    texts = [" ".join(r["words"]) for r in local_rows]
    score_tol, weight_tol = run_tolerances(texts)
    for a, b in zip(ray_rows, local_rows):
        assert a["tokens"] == b["tokens"] and a["words"] == b["words"] and a["record"] == b["record"]
        np.testing.assert_allclose(a["scores"], b["scores"], atol=score_tol)
        ra, rb = ap.load(out / a["record"]), ap.load(clean / b["record"])
        np.testing.assert_allclose(ra.attentions["self"].numpy(), rb.attentions["self"].numpy(), atol=weight_tol)
    writers = {p.name.rsplit("-", 1)[0] for p in (out / "shards").iterdir()}
    assert len(writers) >= 2  # the local run's writer, and the cluster's workers writing their own shards

    # The same directory resumed by the local engine again: nothing redone but the failure, which fails again.
    with pytest.raises(CorpusError, match="1 of 1 examples failed"):
        ds.run_corpus(str(model_dir), None, src, out, progress=False)


def test_gpu_request_on_a_cpu_cluster_is_refused(model_dir, head, tmp_path, monkeypatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(InputError, match=r"asks for 1 GPU but the Ray cluster has 0"):
        ds.run_corpus(
            str(model_dir), None, src, tmp_path / "run", engine="ray", ray_address=head.address,
            num_gpus_per_worker=1, progress=False,
        )  # fmt: skip
    import ray

    assert not ray.is_initialized()  # the run's own connection is closed again


def test_a_lone_surrogate_in_the_input_is_one_error_naming_the_line(model_dir, head, tmp_path, monkeypatch) -> None:
    """Ray Data parses the input in a task: the line's error comes back as the local engine's, not a RayTaskError."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\n{"id": "x", "text": "bad \\ud800"}\n', "utf-8")
    with pytest.raises(InputError, match=r"in.jsonl:2: the text holds a lone surrogate \(\\ud800 at character 5\)"):
        ds.run_corpus(
            str(model_dir), None, src, tmp_path / "run", engine="ray", ray_address=head.address, progress=False
        )
    import ray

    assert not ray.is_initialized()


def test_local_cluster_with_model_objects_and_parquet(tmp_path, monkeypatch) -> None:
    """No address: the run starts a private local cluster; a model object goes through the object store."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    model, tok = tiny_bert(num_labels=2), tiny_tokenizer("bert")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    ds.run_corpus(model, tok, src, tmp_path / "local", progress=False)
    summary = ds.run_corpus(
        model, tok, src, tmp_path / "ray", engine="ray", num_workers=2, shard_format="parquet", progress=False
    )
    assert (summary["engine"], summary["explained"], summary["total"]) == ("ray", len(TEXTS), len(TEXTS))
    assert {p.suffix for p in (tmp_path / "ray" / "shards").iterdir()} == {".parquet"}
    score_tol, _ = run_tolerances(TEXTS)
    for a, b in zip(load_results(tmp_path / "ray"), load_results(tmp_path / "local")):
        assert a["id"] == b["id"] and a["tokens"] == b["tokens"]
        np.testing.assert_allclose(a["scores"], b["scores"], atol=score_tol)
    import ray

    assert not ray.is_initialized()  # the cluster this run started is stopped


def test_a_hub_id_is_pinned_to_its_revision_and_loaded_by_the_worker(tmp_path) -> None:
    """Offline: a hub id resolved from a local Hugging Face cache (the layout the hub client writes)."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-bert"
    snapshot = repo / "snapshots" / sha
    tiny_bert(num_labels=2).save_pretrained(snapshot)
    tiny_tokenizer("bert").save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    code = (
        "from attn_plugins.corpus.source import ModelSource\n"
        "s = ModelSource.of('tiny-org/tiny-bert')\n"
        "model, tok = s.load()\n"
        "print(s.identity()['revision'], type(model).__name__, len(tok.get_vocab()))"
    )
    env = {**SUBPROCESS_ENV, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    revision, cls, vocab = proc.stdout.split()
    assert (revision, cls) == (sha, "BertForSequenceClassification") and int(vocab) == len(
        tiny_tokenizer("bert").get_vocab()
    )


def test_a_worker_that_cannot_start_reports_the_package_error() -> None:
    """A worker failing in its constructor reaches the driver as text inside Ray's ActorDiedError."""
    from attn_plugins.corpus.ray import _cause

    remote = RuntimeError(
        "The actor died because of an error raised in its creation task, ray::MapWorker.__init__()\n"
        '  File "attn_plugins/corpus/source.py", line 149, in load\n'
        "attn_plugins.errors.InputError: the model directory /m on node-2 differs from the one the run started with"
    )
    try:
        try:
            raise remote
        except RuntimeError as inner:
            raise ValueError("") from inner  # Ray Data's SystemException carries no message
    except ValueError as outer:
        found = _cause(outer)
    assert isinstance(found, InputError) and str(found).startswith("the model directory /m on node-2 differs")
    wrapped = RuntimeError("task failed")
    wrapped.cause = CorpusError("1 of 2 examples failed")  # a task error keeps the original exception
    assert isinstance(_cause(wrapped), CorpusError)
    plain = RuntimeError("disk full")
    assert _cause(plain) is plain
