"""Atomic file writes: a crash mid-write never leaves a half-written file under the real name."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(text: str, path: str | Path) -> None:
    atomic_write_bytes(text.encode(), path)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)


def cache_dir() -> Path:
    """Where decoded data sets and latency tables are cached: ``$DSAPRUNE_CACHE`` or
    ``~/.cache/dsaprune``."""
    root = os.environ.get("DSAPRUNE_CACHE") or Path.home() / ".cache" / "dsaprune"
    return Path(root)


def load_safely(
    path: str | Path, what: str, hint: str = "", error: type[Exception] = ValueError
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear ``error`` naming the
    file for a missing or unreadable one (``what``: "checkpoint", …; ``hint``: the fix)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such file (expected a {what})")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        fix = f"; {hint}" if hint else ""
        raise error(f"{p}: not a readable {what} ({type(e).__name__}){fix}") from None


class ConfigError(ValueError):
    """A settings file that is missing, not YAML, or not a mapping."""


def read_yaml(path: str | Path, what: str = "--config") -> dict:
    """The mapping in a YAML settings file, read with ``yaml.safe_load`` (no Python tags: a
    settings file never runs code). Every failure names the file and the fix."""
    import yaml  # only settings files need it

    p = Path(path)
    if not p.is_file():
        kind = "a folder" if p.is_dir() else "no such file"
        raise ConfigError(f"{what} {p}: {kind} (expected a YAML file of settings)")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(
            f"{what} {p}: {str(e.problem or e).strip()} at line "
            f"{e.problem_mark.line + 1 if e.problem_mark else '?'}; settings files may hold "
            "plain values only (no !!python or other tags)"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what} {p}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {p}: not a text file (expected YAML)") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(
            f"{what} {p}: holds a {type(d).__name__}, expected a mapping of setting: value"
        )
    return d


class RunDirError(ValueError):
    """An output folder that cannot be used as asked (holds another run, is a file, is busy)."""


RUN_FILES = ("last.pt", "model.pt", "report.json", "config.json", "metrics.jsonl")
LOCK_NAME = ".dsaprune.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class RunLock:
    """Holds ``RUN_DIR/.dsaprune.lock`` (this process's id) while a run writes to the folder,
    so that a second run into the same folder is refused instead of interleaving its files.
    A lock left by a process that no longer exists is taken over."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pid = -1
                if pid > 0 and pid != os.getpid() and _alive(pid):
                    raise RunDirError(
                        f"{self.path.parent}: another dsaprune process (pid {pid}) is writing "
                        "to this folder; wait for it to finish or choose another --out"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise RunDirError(f"{self.path}: could not take the folder's lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run_dir(out: str | Path | None, resume: bool = False, force: bool = False) -> RunLock:
    """Check that ``out`` may receive a run, create it, and return its lock (not yet taken).

    Refused: an empty name, a path that is a file, and a folder that already holds a run's
    files unless ``resume`` (continue it) or ``force`` (overwrite it) is given."""
    if out is None or str(out).strip() == "":
        raise RunDirError("--out is empty: name the folder the run writes to, e.g. --out runs/r20")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"--out {p}: is a file, not a folder; choose a folder for the run")
    if resume and not (p / "last.pt").is_file():
        raise RunDirError(
            f"--resume: {p / 'last.pt'} does not exist, so there is nothing to continue; "
            "drop --resume to start a new run"
        )
    if p.is_dir() and not (resume or force):
        found = [n for n in RUN_FILES if (p / n).exists()]
        if found:
            raise RunDirError(
                f"--out {p} already holds a run ({', '.join(found)}); pass --resume to "
                "continue it, --force to overwrite it, or choose another --out"
            )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"--out {p}: cannot create the folder ({e.strerror})") from None
    return RunLock(p)
