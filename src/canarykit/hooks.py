"""Hooks: gates, checks and lifecycle calls at the points Flagger names, in Python or HTTP.

``Rollout(hooks=Hooks(...))``: `Hooks` names the callables for each point (see
`canarykit.machine.HookPoint` for the points and their order); a hook takes a `HookCall`
and returns (or awaits) a bool or a `HookAnswer`. `Webhook` posts to a URL, `Approval`
waits for an operator in this process and `FileApproval` for one in another process.
`HookFunction` is the type of a hook.
"""

from ._exports import claim_public_names as _claim_public_names
from ._hooks import Approval as Approval
from ._hooks import FileApproval as FileApproval
from ._hooks import HookAnswer as HookAnswer
from ._hooks import HookCall as HookCall
from ._hooks import HookFunction as HookFunction
from ._hooks import Hooks as Hooks
from ._hooks import Webhook as Webhook

__all__ = ["Approval", "FileApproval", "HookAnswer", "HookCall", "HookFunction", "Hooks", "Webhook"]

_claim_public_names(globals())
