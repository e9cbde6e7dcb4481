//! ext4 building and editing with e2fsprogs: base, overlay and work disks
