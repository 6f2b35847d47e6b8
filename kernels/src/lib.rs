//! courier kernels (gossip, ordered multicast): coming with their issues.
#![forbid(unsafe_code)]
