"""The shared real-server fixtures of tests/integration/conftest.py start what they say."""

from canarykit.testing.lab import EtcdCluster


def test_the_etcd_cluster_fixture_is_three_members_with_a_leader(
    etcd_cluster: EtcdCluster,
) -> None:
    assert len(etcd_cluster.endpoints) == 3
    assert all(etcd_cluster.running(index) for index in range(3))
    assert etcd_cluster.leader_index() in range(3)
    assert etcd_cluster.get("never-written") is None
