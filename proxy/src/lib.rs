//! metaguard-proxy library.
