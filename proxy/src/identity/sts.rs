//! One `sts:AssumeRole` call (to be written: see docs/identity.md).
