"""Policy files the command-line and policy tests start from, in TOML sections.

A test joins the sections it is not about with `policy` and writes only the one it
tests, so a change to the policy schema is made here once. Sections with ``{state}``
are templates: the test fills in its state directory with ``str.format``.

    path.write_text(policy(WEIGHTS_PLAN, ERROR_RATE, rollout_table("web")).format(state=tmp_path))
"""

from __future__ import annotations

# 10% then 50%, a minute each, judged every 30 seconds.
WEIGHTS_PLAN = """\
[plan]
shape = "weights"
weights = [10, 50]
hold = "1m"
analysis_interval = "30s"
"""

# 10%, 30%, 50%... two minutes each.
LINEAR_PLAN = """\
[plan]
shape = "linear"
initial = 10
step = 20
hold = "2m"
analysis_interval = "30s"
"""

# One step at 20%; add WAIT_FOR_PROMOTION to stop there until an operator promotes.
STEP_PLAN = """\
[plan]
shape = "steps"
analysis_interval = "30s"
[[plan.steps]]
set_weight = 20
"""

WAIT_FOR_PROMOTION = """\
[[plan.steps]]
wait_for_promotion = true
"""

# Roll back when the canary's error rate is over 2%.
ERROR_RATE = """\
[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = "2%"
"""

# A Prometheus that is never asked (port 9, discard): the tests stop before it is.
PROMETHEUS = """\
[metrics]
kind = "prometheus"
url = "http://127.0.0.1:9"
stable = "v1"
canary = "v2"
"""


def rollout_table(name: str = "web", *, state_dir: str | None = "{state}") -> str:
    """The ``[rollout]`` table: its name, and its state directory (a template by default)."""
    text = f'[rollout]\nname = "{name}"\n'
    if state_dir is not None:
        text += f'state_dir = "{state_dir}"\n'
    return text


def haproxy_router(runtime_api: str = "127.0.0.1:9") -> str:
    """An HAProxy router on backend ``app`` with servers ``v1`` (stable) and ``v2``."""
    return (
        "[router]\n"
        'kind = "haproxy"\n'
        f'runtime_api = "{runtime_api}"\n'
        'backend = "app"\n'
        'stable = ["v1"]\n'
        'canary = ["v2"]\n'
    )


def policy(*sections: str) -> str:
    """The sections as one policy file, a blank line between them."""
    return "\n".join(section.rstrip("\n") + "\n" for section in sections)
