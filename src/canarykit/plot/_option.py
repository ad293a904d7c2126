"""The ``--plot FILE`` option of ``canarykit simulate``."""

from __future__ import annotations

import argparse
import importlib.util

from .._errors import ConfigError
from ._render import _EXTRA, image_format

__all__ = ["add_plot_option"]


def _plot_path(text: str) -> str:
    """Check ``--plot``'s value while parsing: before the simulation runs, not after."""
    try:
        image_format(text, "--plot")
    except ConfigError as exc:
        # argparse prefixes "argument --plot: " itself.
        raise argparse.ArgumentTypeError(f"{exc.problem}, got {text!r}") from None
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError(
            f"drawing a rollout needs matplotlib, which is not installed: {_EXTRA}"
        )
    return text


def add_plot_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--plot FILE`` to `parser` (the ``simulate`` command's).

    The value is checked while parsing: a suffix other than .svg or .png, or matplotlib
    missing, is a usage error before anything runs. The parsed ``args.plot`` is the path,
    or None; write the picture with ``plot_rollout(simulation, args.plot)``.
    """
    parser.add_argument(
        "--plot",
        metavar="FILE",
        type=_plot_path,
        default=None,
        help="also write a picture of the rollout to FILE (.svg or .png; needs matplotlib: "
        "pip install 'canarykit[plot]')",
    )
