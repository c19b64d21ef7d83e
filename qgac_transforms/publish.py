"""Publishing a saved model folder: upload it to the Hub, or copy it into the package.

``python -m qgac_transforms.publish upload FOLDER REPO_ID`` and
``python -m qgac_transforms.publish embed FOLDER``. Unlike a plain ``hf upload``, both
first load the folder strictly (keys, shapes, SHA-256 of the weights) and send or copy
only the folder's :func:`~.hub.published_files`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import HfApi

from ._version import __version__
from .hub import (
    CARD_NAME,
    CONFIG_NAME,
    TRAINING_NAME,
    WEIGHT_PATTERNS,
    InvalidWeightsError,
    embedded_folder,
    load_folder,
    published_files,
    weight_files_present,
)
from .model import QGAC


def upload(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Publish a saved model folder to a Hub model repo (created if needed); returns the commit hash.

    The folder must load (strictly, hash checked) and carry its card; only its
    :func:`published_files` are sent, and the repo's weight files and lineage of another
    layout or an earlier model are deleted in the same commit.
    """
    folder = Path(folder)
    load_folder(folder, QGAC)  # strictly, hash checked
    if not (folder / CARD_NAME).is_file():
        raise InvalidWeightsError(folder / CARD_NAME, "missing: write the folder with save_model to get a model card")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, repo_type="model", folder_path=folder, revision=revision,
        commit_message=commit_message or f"Upload {folder.name} (qgac-transforms {__version__})",
        allow_patterns=published_files(folder), delete_patterns=[*WEIGHT_PATTERNS, TRAINING_NAME],
    )
    return commit.oid


def embed(folder: str | os.PathLike[str], name: str | None = None) -> Path:
    """Copy a saved model folder into the package (``weights/<name>/``) after checking it loads."""
    folder = Path(folder)
    load_folder(folder, QGAC)  # strictly, hash checked
    target = embedded_folder(name or folder.resolve().name)
    target.mkdir(parents=True, exist_ok=True)
    names = published_files(folder)
    # the config last: a folder caught half-copied fails its digest check, never loads mixed files
    for file_name in sorted(names, key=lambda n: n == CONFIG_NAME):
        shutil.copyfile(folder / file_name, target / file_name)
    earlier = weight_files_present(target)
    if (target / TRAINING_NAME).is_file():
        earlier.add(target / TRAINING_NAME)
    for stale in earlier:  # no weights or lineage left from an earlier model
        if stale.name not in names:
            stale.unlink()
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qgac_transforms.publish upload|embed ...``; exit 0 on success, 1 on failure."""
    parser = argparse.ArgumentParser(prog="python -m qgac_transforms.publish", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    upload_parser = commands.add_parser("upload", help="publish a saved model folder to a Hub repo")
    upload_parser.add_argument("folder")
    upload_parser.add_argument("repo_id")
    upload_parser.add_argument("--revision", help="branch to commit to (default: main)")
    upload_parser.add_argument("--private", action="store_true", help="create the repo private")
    upload_parser.add_argument("--message", help="commit message")
    embed_parser = commands.add_parser("embed", help="copy a saved model folder into the package's weights/")
    embed_parser.add_argument("folder")
    embed_parser.add_argument("--name", help="folder name inside weights/ (default: the folder's name)")
    args = parser.parse_args(argv)
    try:
        if args.command == "upload":
            commit = upload(
                args.folder, args.repo_id, revision=args.revision, private=args.private or None,
                commit_message=args.message,
            )
            print(f"uploaded {args.folder} to {args.repo_id} at commit {commit}")
        else:
            print(f"embedded {args.folder} as {embed(args.folder, args.name)}")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
