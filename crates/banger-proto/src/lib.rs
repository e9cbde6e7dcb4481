//! Wire types and framing of the host<->agent protocol
