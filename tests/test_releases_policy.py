"""Policy files: promote by upgrading stable ([hooks] promote_stable and the way back)."""

import pytest

from canarykit import ConfigError
from canarykit.hooks import Webhook
from canarykit.policy import load_policy
from helpers.policies import ERROR_RATE, WEIGHTS_PLAN, policy

PLAN = policy(WEIGHTS_PLAN, ERROR_RATE)


def hooks_of(text: str):
    return load_policy(PLAN + "[hooks]\n" + text).deployment.build_hooks()


def test_promote_stable_and_the_way_back_to_stable_are_policy_keys():
    hooks = hooks_of(
        'promote_stable = "http://deploy.internal/upgrade-stable"\n'
        "traffic_back = [50, 0]\n"
        'traffic_back_hold = "30s"\n'
    )
    (upgrade,) = hooks.promote_stable
    assert isinstance(upgrade, Webhook)
    assert (hooks.traffic_back, hooks.traffic_back_hold) == ((50.0, 0.0), 30.0)


def test_traffic_back_defaults_to_at_once():
    hooks = hooks_of('promote_stable = "http://deploy.internal/upgrade-stable"\n')
    assert (hooks.traffic_back, hooks.traffic_back_hold) == ((0.0,), 0.0)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("traffic_back = 0", "hooks.traffic_back"),
        ("traffic_back = ['half', 0]", "hooks.traffic_back[0]"),
        ("traffic_back = [50, 60, 0]", "hooks.traffic_back[1]"),
        ("traffic_back = [50]", "hooks.traffic_back"),
        ("traffic_back_hold = 'soon'", "hooks.traffic_back_hold"),
    ],
)
def test_a_bad_way_back_names_its_key(text, field):
    with pytest.raises(ConfigError) as info:
        hooks_of(text + "\n")
    assert info.value.field == field


def test_the_way_back_round_trips_through_toml():
    text = PLAN + '[hooks]\ntraffic_back = [50, 0]\ntraffic_back_hold = "30s"\n'
    policy = load_policy(text)
    again = load_policy(policy.to_toml())
    assert again == policy
    assert again.deployment.build_hooks().traffic_back == (50.0, 0.0)
