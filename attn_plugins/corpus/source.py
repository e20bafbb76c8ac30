"""Where a corpus run's model comes from: an object in this process, or a local path / hub id that every
worker loads itself (so a large model is never pickled from the driver), and what identifies it on resume.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .shards import file_digest

# Which transformers class loads a model for a task (``--task-model``); default: the config's architecture.
TASK_CLASSES = {
    "classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "embedding": "AutoModel",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_path(name: str) -> bool:
    """Anything that is not shaped like a hub id (``name`` or ``org/name``) is meant as a local path."""
    return name.startswith((".", "/", "~")) or not _HUB_ID.match(name)


def model_class(config: Any, task: str | None) -> Any:
    """The transformers class that loads a model: the one ``task`` names, else the config's architecture."""
    import transformers

    if task is not None:
        if task not in TASK_CLASSES:
            raise InputError(f"unknown task model {task!r}; choose from {', '.join(sorted(TASK_CLASSES))}")
        return getattr(transformers, TASK_CLASSES[task])
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def resolve_name(name: str) -> str:
    """A local directory as an absolute path, or a hub id unchanged; a path that does not exist is an error."""
    local = Path(name).expanduser()
    if local.exists():
        return str(local.resolve())
    if looks_like_path(name):
        raise InputError(f"model path {name!r} does not exist")
    return name


def load_pretrained(name: str, task: str | None = None, revision: str | None = None) -> tuple[Any, Any, str]:
    """Load a transformers model (eval mode) and its tokenizer from a local path or hub id."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one clear line per event, not weight-loading bars
    name = resolve_name(name)
    try:
        config = transformers.AutoConfig.from_pretrained(name, revision=revision)
        cls = model_class(config, task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(name, revision=revision)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, revision=revision)
    except InputError:
        raise
    except Exception as exc:  # a directory without config.json, an unknown model type, missing weights, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load model {name!r}: {reason}") from None
    model.eval()
    return model, tokenizer, name


def _file_digest(path: Path) -> str:
    """A model file's digest (whole when small, sampled when large: hashing GBs would dominate start-up)."""
    with open(path, "rb") as fh:
        return file_digest(fh, path.stat().st_size)


def directory_digest(root: str | Path) -> str:
    """The identity of a model directory: every file's relative path and content digest."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # .cache/, .git/: not the model
        h.update(f"{rel.as_posix()}:{_file_digest(path)}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class ModelSource:
    """A model named by local path or hub id (loaded where it runs), or held as objects in this process."""

    name: str | None = None
    task: str | None = None  # which class loads it (``--task-model``)
    revision: str | None = None  # a hub id's commit, pinned so every worker loads the same weights
    digest: str | None = None  # a local directory's identity, checked again by every worker
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    shared: list[Any] | None = field(default=None, repr=False)  # [Ray object ref of (model, tokenizer)]

    @classmethod
    def of(cls, model: Any, tokenizer: Any = None, task: str | None = None) -> ModelSource:
        """A source from what ``run_corpus`` was given: a path or hub id (str/PathLike), or a model object."""
        if isinstance(model, (str, Path)):
            if tokenizer is not None:
                raise InputError("a model given by name loads its own tokenizer; pass tokenizer=None")
            name = resolve_name(str(model))
            if Path(name).is_dir():
                return cls(name=name, task=task, digest=directory_digest(name))
            return cls(name=name, task=task, revision=_hub_revision(name))
        return cls(model=model, tokenizer=tokenizer)

    def identity(self) -> dict[str, Any]:
        """What must match when a run resumes (named sources; objects are fingerprinted from their weights)."""
        if self.digest is not None:
            return {"model_dir": self.digest, "task_model": self.task}
        return {"hub_id": self.name, "revision": self.revision, "task_model": self.task}

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer): the objects, or the named model loaded here (a worker checks the directory first)."""
        if self.shared is not None:
            import ray

            return ray.get(self.shared[0])
        if self.name is None:
            return self.model, self.tokenizer
        if self.digest is not None and directory_digest(self.name) != self.digest:
            import socket

            raise InputError(
                f"the model directory {self.name} on {socket.gethostname()} differs from the one the run "
                "started with; every node needs the same model files"
            )
        model, tokenizer, _ = load_pretrained(self.name, self.task, revision=self.revision)
        return model, tokenizer


def _hub_revision(name: str) -> str | None:
    """The commit a hub id resolves to now: its config's snapshot (downloaded, or from the local cache offline)."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(name, "config.json"))
    except Exception as exc:  # the hub client's errors: not found, offline without a cache, no network
        raise InputError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from None
    return path.parent.name if path.parent.parent.name == "snapshots" else None


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data (options in a manifest): unknown objects by their repr."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))
