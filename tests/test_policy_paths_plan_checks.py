"""A policy step its router could never apply is refused before ``canarykit run`` moves traffic.

A TOML header route ``regex = 'a"b'`` with the nginx router used to pass the loader and
fail at step 3, with canary traffic live (issue 13, item 10). Now the router checks every
split of the plan first, and the error names the policy key.
"""

# Imports internals on purpose: the command line (canarykit._cli is private), run as the
# `canarykit` script runs it; the machine's wording and limits; the policy layer's helpers.

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import canarykit as ck
from canarykit import ConfigError
from canarykit._cli import main
from canarykit._machine import plan_splits
from canarykit.policy._deployment import check_plan_on_router
from canarykit.testing import FakeRouter

pytest.importorskip("httpx")

POLICY = """\
[plan]
shape = "steps"
analysis_interval = "30s"
[[plan.steps]]
set_weight = 10
[[plan.steps]]
header_route = ROUTES
[[plan.steps]]
set_weight = 50

[decider]
kind = "threshold"
[[decider.metrics]]
metric = "error_rate"
max = 0.02

[rollout]
name = "web"

[router]
kind = "nginx"
include_path = "canary.conf"
main_config = "nginx.conf"
pid_file = "nginx.pid"
stable = ["127.0.0.1:8001"]
canary = ["127.0.0.1:8002"]

[metrics]
kind = "prometheus"
url = "http://127.0.0.1:9"
stable = "v1"
canary = "v2"
"""


@pytest.mark.parametrize(
    ("routes", "key"),
    [
        ("""{header = "X-User", regex = 'a"b'}""", "plan.steps[1].header_route.regex"),
        (
            """[{header = "X-A", exact = "x"}, {header = "X_B", prefix = "y"}]""",
            "plan.steps[1].header_route[1].header",
        ),
    ],
)
def test_run_refuses_a_header_route_nginx_cannot_apply_before_moving_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], routes: str, key: str
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(POLICY.replace("ROUTES", routes))
    assert main(["run", str(policy), "--no-status"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"canarykit: error: {key}: ")
    assert "NginxRouter could never apply it" in err
    assert "Traceback" not in err and out == ""
    # Nothing was started: no state saved, no include file written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


class CheckingRouter(FakeRouter):
    """A fake router with a split check of its own, refusing mirroring."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[Any] = []

    def check_split(self, split: ck.TrafficSplit) -> None:
        self.checked.append(split)
        if split.mirror_percent:
            raise ConfigError("mirror_percent", split.mirror_percent, "cannot mirror here")


def test_a_router_check_sees_every_split_and_its_refusal_names_the_step() -> None:
    plan = ck.Plan(steps=[ck.SetWeight(10), ck.Pause(60), ck.SetMirror(5)])
    router = CheckingRouter()
    with pytest.raises(ConfigError) as caught:
        check_plan_on_router(plan, router)
    assert caught.value.field == "plan.steps[2].mirror"
    assert [s.mirror_percent for s in router.checked] == [0, 5]
    router = CheckingRouter()
    check_plan_on_router(ck.Plan(steps=[ck.SetWeight(10), ck.SetWeight(50)]), router)
    assert router.checked == [split for _, split in plan_splits(ck.from_weights([10, 50], hold=1))]


def test_a_router_without_a_check_is_not_asked() -> None:
    check_plan_on_router(ck.Plan(steps=[ck.SetWeight(10)]), FakeRouter())
