//! nf_tables over netlink (to be written).
