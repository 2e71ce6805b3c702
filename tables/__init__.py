"""Table definitions only: names, keys, value types and RocksDB options."""
