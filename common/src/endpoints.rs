//! Metadata endpoints and the proxy port agreed for each.
//!
//! The plugin DNATs `address:port` inside the pod to `proxy-address:proxy_port`; the proxy listens on
//! `proxy_port` and forwards what its policy allows to `address:port`. One port per endpoint is the
//! contract that lets the proxy know the destination the pod chose without reading the Host header.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One metadata service the plugin redirects to the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Short name used in logs and metrics (bounded: it comes from configuration).
    pub name: String,
    /// The address pods use to reach the metadata service.
    pub address: IpAddr,
    /// The TCP port of the metadata service (80 for every cloud we know).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The port metaguard-proxy listens on for this endpoint.
    pub proxy_port: u16,
}

fn default_port() -> u16 {
    80
}

pub const AWS_IMDS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const AWS_IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
pub const ALIBABA_IMDS: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

/// Proxy port for 169.254.169.254:80 (AWS, GCP, Azure, OpenStack all answer there).
pub const PORT_IMDS_V4: u16 = 8169;
/// Proxy port for [fd00:ec2::254]:80 (AWS IMDS over IPv6).
pub const PORT_IMDS_V6: u16 = 8170;
/// Proxy port for 100.100.100.200:80 (Alibaba Cloud).
pub const PORT_ALIBABA: u16 = 8171;

/// The endpoints redirected when the configuration names none.
pub fn default_endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            name: "imds-v4".into(),
            address: IpAddr::V4(AWS_IMDS_V4),
            port: 80,
            proxy_port: PORT_IMDS_V4,
        },
        Endpoint {
            name: "imds-v6".into(),
            address: IpAddr::V6(AWS_IMDS_V6),
            port: 80,
            proxy_port: PORT_IMDS_V6,
        },
        Endpoint {
            name: "alibaba".into(),
            address: IpAddr::V4(ALIBABA_IMDS),
            port: 80,
            proxy_port: PORT_ALIBABA,
        },
    ]
}

/// Addresses that are blocked only when asked for by name, because blocking them by default breaks
/// features users rely on (ECS task credentials, EKS Pod Identity, Azure WireServer which is also
/// Azure's DNS).
pub fn opt_in_addresses(name: &str) -> Option<Vec<IpAddr>> {
    let v = match name {
        "ecs" => vec![IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2))],
        "eks-pod-identity" => vec![
            IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23)),
        ],
        "azure-wireserver" => vec![IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16))],
        _ => return None,
    };
    Some(v)
}

/// Names accepted by [`opt_in_addresses`], for error messages and docs.
pub const OPT_IN_NAMES: &[&str] = &["ecs", "eks-pod-identity", "azure-wireserver"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_distinct() {
        let eps = default_endpoints();
        let mut ports: Vec<u16> = eps.iter().map(|e| e.proxy_port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), eps.len());
        assert_eq!(eps[1].address.to_string(), "fd00:ec2::254");
    }

    #[test]
    fn opt_in_names_resolve() {
        for n in OPT_IN_NAMES {
            assert!(opt_in_addresses(n).is_some(), "{n}");
        }
        assert!(opt_in_addresses("nope").is_none());
    }
}
