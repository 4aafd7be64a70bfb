//! Validation of the identifiers that end up in file names and firewall object names.
//!
//! Container IDs, network names and interface names come from the runtime; they become parts of
//! file names in the state directory and of nftables table names, so anything that could escape a
//! directory or confuse a parser is refused here, once, for both binaries.

/// CNI's rule for container IDs and network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_cni_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    s.len() <= 1024 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux interface name rules (IFNAMSIZ): 1..=15 bytes, no '/', ':', whitespace or control
/// characters, and not "." or "..".
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The key of one attachment: `network:containerid:ifname`. ':' is allowed in none of the three,
/// so the key is unambiguous and safe as a file name.
pub fn attachment_key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}:{container_id}:{ifname}")
}

/// Splits a key made by [`attachment_key`]; `None` when it is not one.
pub fn split_attachment_key(key: &str) -> Option<(&str, &str, &str)> {
    let mut it = key.splitn(3, ':');
    let (n, c, i) = (it.next()?, it.next()?, it.next()?);
    (valid_cni_name(n) && valid_cni_name(c) && valid_ifname(i)).then_some((n, c, i))
}

/// A short stable hash (FNV-1a, 64 bit) for names that must fit in kernel limits (nftables table
/// names are at most 255 bytes, but we keep them short and readable). Stable across Rust versions,
/// unlike `DefaultHasher`.
pub fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_names() {
        assert!(valid_cni_name("abc-DEF_1.2"));
        assert!(!valid_cni_name(""));
        assert!(!valid_cni_name("-abc"));
        assert!(!valid_cni_name("a/b"));
        assert!(!valid_cni_name("a:b"));
        assert!(!valid_cni_name("a\nb"));
        assert!(!valid_cni_name(".."));
    }

    #[test]
    fn ifnames() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("net1.100"));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("0123456789abcdef"));
        assert!(!valid_ifname("eth 0"));
        assert!(!valid_ifname("eth\u{7}"));
    }

    #[test]
    fn keys_round_trip() {
        let k = attachment_key("net", "Abc123", "eth0");
        assert_eq!(split_attachment_key(&k), Some(("net", "Abc123", "eth0")));
        assert_eq!(split_attachment_key("net:../x:eth0"), None);
        assert_eq!(split_attachment_key("net:abc"), None);
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(short_hash(""), "cbf29ce484222325");
        assert_ne!(short_hash("a"), short_hash("b"));
    }
}
