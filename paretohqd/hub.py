"""`paretohqd export RUN --push-to-hub OWNER/NAME`: a run's export (`paretohqd.export`: one folder
per preference with its model card, the repository card, `lora-modules.json`, `vllm-serve.sh`)
published as one Hugging Face Hub model repository, in one commit.

The export is written to a temporary folder (or `--out`), then uploaded with huggingface_hub's
`create_commit`: the Hub applies a commit whole or not at all, so a push that fails part way leaves
no new revision. `--dry-run` lists the files and the card's metadata and makes no network call.
What the Hub refuses (no token, no network, no rights, a bad name) is one line naming the
repository and the fix. The token comes from huggingface_hub's usual places (`HF_TOKEN`,
`hf auth login`) and is never printed or written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from paretohqd.export import EXPORT_MARKER, export
from paretohqd.io import InputError

NO_TOKEN = "set HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens) or run `hf auth login`"


@dataclass(frozen=True)
class Push:
    """What a push uploaded (or, dry, would upload)."""

    repo_id: str
    files: list[tuple[str, int]]
    """(path in the repository, bytes) of every file, sorted by path."""
    metadata: str
    """The repository card's YAML metadata (README.md's front matter)."""
    url: str | None
    """The commit's URL on the Hub; None for a dry run."""


def check_repo_id(repo_id: str) -> None:
    """Refuse a repository name the Hub would refuse, before anything is written or sent.

    Raises:
        InputError: not OWNER/NAME, or a name with characters the Hub does not allow.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    fix = "give OWNER/NAME (your user or organisation name, a slash, and the repository's name: letters, digits, -, _, .)"
    if repo_id.count("/") != 1:
        raise InputError(f"--push-to-hub {repo_id!r}: not a repository id; {fix}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise InputError(f"--push-to-hub {repo_id!r}: {_one_line(e)}; {fix}") from None


def push(run: str | Path, repo_id: str, *, private: bool = False, dry_run: bool = False, out: str | Path | None = None,
         merged: bool = False, weights: list[str] = (), trust_remote_code: bool = False) -> Push:
    """Export `run` (into `out`, else a temporary folder) and upload the export as the Hub model
    repository `repo_id` in one commit (created if absent; `private` makes a new one private).

    Returns:
        What was uploaded (`url` None when `dry_run`).

    Raises:
        InputError: a bad `repo_id` (checked offline, first), no token, or what the Hub answered, each
            one line naming the repository and the fix; and what `export` refuses.
    """
    from huggingface_hub import metadata_load
    from huggingface_hub.utils import yaml_dump

    check_repo_id(repo_id)
    token = None if dry_run else _token(repo_id)
    with tempfile.TemporaryDirectory(prefix="paretohqd-push-") as tmp:
        folder = export(run, out if out is not None else Path(tmp) / "export", merged=merged, weights=list(weights),
                        trust_remote_code=trust_remote_code, repo_id=repo_id)
        files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*")
                       if p.is_file() and p.name != EXPORT_MARKER)  # the marker guards a local folder only
        # as written: ModelCardData would keep one of model-index's entries (one per preference)
        metadata = yaml_dump(metadata_load(folder / "README.md"), sort_keys=False)
        url = None if dry_run else _upload(folder, files, repo_id, token, private, Path(run).name)
    return Push(repo_id, files, metadata, url)


def _token(repo_id: str) -> str:
    from huggingface_hub import get_token
    from huggingface_hub.errors import OIDCError

    try:
        token = get_token()
    except OIDCError as e:
        raise InputError(f"{repo_id}: no Hugging Face token: {_one_line(e)}; {NO_TOKEN}") from None
    if not token:
        raise InputError(f"{repo_id}: no Hugging Face token found; {NO_TOKEN}")
    return token


def _upload(folder: Path, files: list[tuple[str, int]], repo_id: str, token: str, private: bool, run_name: str) -> str:
    """Create `repo_id` if absent and commit every file of `folder` to it at once; the commit's URL."""
    import httpx2  # huggingface_hub's HTTP client: its transport errors are the network's
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if private and not api.repo_info(repo_id).private:
            raise InputError(f"{repo_id}: exists and is public, and --private does not change an existing "
                             f"repository; make it private in its settings on the Hub, or push to a new name")
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path)) for path, _ in files]
        info = api.create_commit(repo_id, operations, commit_message=f"paretohqd export of run {run_name}",
                                 commit_description=f"{len(files)} files, written by `paretohqd export "
                                                    f"--push-to-hub {repo_id}`.")
    except (HfHubHTTPError, OfflineModeIsEnabled, httpx2.TransportError, ValueError) as e:
        raise _hub_error(e, repo_id, api.endpoint) from None
    return info.commit_url


def _hub_error(e: Exception, repo_id: str, endpoint: str) -> Exception:
    """What the Hub (or the way to it) answered, as one line naming the repository and the fix; a
    ValueError of ours or huggingface_hub's (a bug, not the Hub's answer) as it is."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(e, InputError):
        return e
    if isinstance(e, OfflineModeIsEnabled):
        return InputError(f"{repo_id}: HF_HUB_OFFLINE is set, so nothing may reach the Hub; unset it to push "
                          f"(--dry-run lists what would be uploaded without the network)")
    if isinstance(e, httpx2.TransportError):
        return InputError(f"{repo_id}: cannot reach {endpoint} ({type(e).__name__}: {_one_line(e)}); check the "
                          f"network (and HF_ENDPOINT, if set), then run the same command again")
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code
        said = f" ({status}: {_one_line(e.server_message)})" if e.server_message else f" ({status})"
        if status == 401:
            return InputError(f"{repo_id}: the Hub refused the token{said}; {NO_TOKEN}")
        if status == 403:
            owner = repo_id.split("/")[0]
            return InputError(f"{repo_id}: this token may not write there{said}; use a token with write access to "
                              f"{owner!r} (https://huggingface.co/settings/tokens), or push to a repository of your own")
        return InputError(f"{repo_id}: the Hub answered{said}; nothing was committed: run the same command again "
                          f"later")
    if isinstance(e, ValueError) and str(e).startswith("Invalid metadata in README.md"):
        return InputError(f"{repo_id}: the Hub refused the model card's metadata ({_one_line(e)}); please report "
                          f"this as a paretohqd bug, with `--dry-run`'s output")
    return e


def _one_line(e: object) -> str:
    return " ".join(str(e).split())[:300]
