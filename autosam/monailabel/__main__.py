"""Command line: `python -m autosam.monailabel init-app APP_DIR --bundle bundle [--override FILE ...]`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from autosam.monailabel.app_dir import create_app_dir

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autosam.monailabel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    init_app = commands.add_parser(
        "init-app",
        help="write a MONAI Label app folder that serves the autosam bundle",
        description="Write APP_DIR/main.py and copy the bundle to APP_DIR/model/NAME/ with its "
        "inference.json and train.json merged with the override files.",
    )
    init_app.add_argument("app_dir", help="app folder to create; pass it to `monailabel start_server --app`")
    init_app.add_argument("--bundle", required=True, help="the autosam bundle folder (contains configs/)")
    init_app.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="FILE",
        help="JSON/YAML file whose ids replace the bundle's (repeatable, applied in order)",
    )
    init_app.add_argument(
        "--checkpoint", help="trained checkpoint to serve at once (copied to models/model.pt)"
    )
    init_app.add_argument("--name", default="autosam", help="model name that clients see (default: autosam)")
    init_app.add_argument(
        "--label",
        help="name of the segmented structure that clients show, e.g. liver (default: the bundle's)",
    )
    init_app.add_argument(
        "--force", action="store_true", help="replace the configs of an existing bundle copy"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        target = create_app_dir(
            args.app_dir,
            bundle=args.bundle,
            overrides=args.override,
            checkpoint=args.checkpoint,
            name=args.name,
            label=args.label,
            force=args.force,
        )
    except (FileNotFoundError, FileExistsError) as err:
        print(f"init-app failed: {err}", file=sys.stderr)
        return 1
    print(f"app folder: {args.app_dir}\nbundle copy: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
