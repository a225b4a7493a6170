"""A git worktree per trial for host-workspace tasks that name a `repository` / `branch` (the seed's
isolation for parallel runs): every trial starts from the same commit, in its own folder, and the worktree
is removed afterwards so the repository does not collect stale entries."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from filelock import FileLock

from tbench.errors import FailureMode, TrialError

GIT_TIMEOUT_SEC = 600


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_SEC, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrialError(f"git {args[0]} failed: {exc}", FailureMode.BUILD_ERROR) from exc
    if proc.returncode != 0:
        raise TrialError(f"git {' '.join(args[:2])} failed: {proc.stderr.strip()[-300:]}", FailureMode.BUILD_ERROR)
    return proc.stdout


def source_repo(repository: str) -> Path:
    """A local repository as it is; a URL cloned once (bare) into the cache and fetched on later use."""
    local = Path(repository).expanduser()
    if local.is_dir():
        return local.resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tbench" / "repos"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / hashlib.sha256(repository.encode()).hexdigest()[:16]
    with FileLock(str(target) + ".lock"):
        if target.is_dir():
            _git("fetch", "--quiet", "origin", "+refs/heads/*:refs/heads/*", cwd=target)
        else:
            _git("clone", "--quiet", "--bare", repository, str(target))
    return target


def add_worktree(repository: str, branch: str | None, path: Path) -> Path:
    """Check `branch` (default: the repository's HEAD) out, detached, at `path`. Returns the source repo."""
    repo = source_repo(repository)
    with FileLock(str(repo) + ".tbench-worktree.lock"):  # git's own index lock dislikes concurrent adds
        _git("worktree", "add", "--detach", "--force", str(path), branch or "HEAD", cwd=repo)
    return repo


def remove_worktree(repo: Path, path: Path) -> None:
    with FileLock(str(repo) + ".tbench-worktree.lock"):
        try:
            _git("worktree", "remove", "--force", str(path), cwd=repo)
        except TrialError:
            _git("worktree", "prune", cwd=repo)
