//! SYN1 wire protocol (placeholder; see docs/PROTOCOL.md).
