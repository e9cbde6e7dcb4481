//! Root filesystems to read-only ext4 base images plus work seeds
