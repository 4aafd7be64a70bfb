//! metaguard-proxy end to end (root): a node namespace with pods attached by Debian's bridge and
//! the real metaguard plugin, the proxy running in the node, and a "cloud" namespace holding
//! 169.254.169.254 / fd00:ec2::254 with fake-metadata recording every request it receives.

use metaguard_tests::cni::Node;
use metaguard_tests::proxy::{imds, request, Cloud, Proxy, ProxyOptions};
use std::time::Duration;

#[test]
fn smoke() {
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let proxy = Proxy::start(ProxyOptions::new(node.ns.name(), &node.state_dir()).policy("default = \"aws\"\n"));
    let pod = node.pod("1.0.0");
    let ex = request(pod.ns.path(), imds(false), "GET", "/latest/meta-data/instance-id", &[]);
    eprintln!("{}", ex.summary());
    eprintln!("{:?}", ex.responses.first().map(|r| String::from_utf8_lossy(&r.body).to_string()));
    eprintln!("{:#?}", proxy.decisions());
    eprintln!("{:#?}", cloud.fake.requests());
    eprintln!("{}", proxy.stderr());
    let _ = Duration::ZERO;
}
