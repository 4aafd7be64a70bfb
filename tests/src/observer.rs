//! The cloud-side judge of the network-level tests: an nftables `netdev` ingress counter on the
//! cloud namespace's interface that counts every packet arriving from anywhere but the node's own
//! addresses (the proxy's upstream connections come from those, to port 80 only). A pod packet
//! that reaches the metadata side by any path (a bypass of the proxy) is counted, whatever its
//! inner or outer addresses were on the way.

use crate::netns::Netns;
use std::time::{Duration, Instant};

/// How long to keep watching for something that must not arrive.
pub const QUIET: Duration = Duration::from_millis(700);

/// Installs the counters in `cloud` (see the module docs).
pub fn install(cloud: &Netns) {
    cloud.sh("nft -f - <<'EOF'
table netdev mgobs {
  chain in {
    type filter hook ingress device eth0 priority -500; policy accept;
    ip saddr != 169.254.169.1 counter
    ip saddr 169.254.169.1 ip protocol != tcp ip protocol != icmp counter
    ip saddr 169.254.169.1 tcp dport != 80 counter
    ip6 saddr != { fd00:ec2::1, fe80::/10 } counter
    ip6 saddr fd00:ec2::1 tcp dport != 80 counter
  }
}
EOF");
}

/// Packets counted so far.
pub fn escaped(cloud: &Netns) -> u64 {
    cloud
        .ok("nft", &["list", "table", "netdev", "mgobs"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// Polls the counters for [`QUIET`]; panics at the first non-zero count.
pub fn assert_nothing_escaped(cloud: &Netns, what: &str) {
    let deadline = Instant::now() + QUIET;
    loop {
        let n = escaped(cloud);
        assert_eq!(
            n,
            0,
            "{what}: {n} packets reached the cloud namespace:\n{}",
            cloud.ok("nft", &["list", "table", "netdev", "mgobs"])
        );
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most 5 s) until something has reached the cloud: the control of every test that
/// asserts nothing does.
pub fn wait_escaped(cloud: &Netns, what: &str) {
    crate::netns::wait_for(what, Duration::from_secs(5), || escaped(cloud) > 0);
}
