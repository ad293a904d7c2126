"""The ``canarykit`` command (private): the application layer over the public API.

``_main`` parses the command line and runs the simulation commands; ``_run`` drives a
rollout from a policy file; ``_control`` sends operator commands to a running rollout;
``_init`` and ``_render`` write the files a team starts from. Nothing here is imported
by the library itself.
"""

from ._main import main

__all__ = ["main"]
