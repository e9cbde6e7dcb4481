//! Kernel import: kernel files and Debian linux-image packages
