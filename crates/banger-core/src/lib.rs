//! Config, paths and the daemon's services: images, kernels, VMs
