"""etcd v3 store and lease (being written)."""
