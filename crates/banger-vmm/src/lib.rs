//! VMM driver trait with Firecracker and QEMU implementations
