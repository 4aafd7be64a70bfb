//! `gen-records`: fills a metaguard state directory with synthetic pod records, written with
//! metaguard-common's own `StateDir` so the format is exactly what the plugin writes. Used by
//! `scripts/bench-proxy.sh` to measure the proxy's memory with many pods on the node.
//!
//! ```text
//! gen-records --state-dir DIR [--count 10000] [--network mgbench] [--first-ip 10.200.0.1]
//! ```
//! Record `i` gets container ID `bench<i>` (64 characters, like a real one), pod `bench/pod-<i>`,
//! one annotation, and the address `first-ip + i` (IPv4), so the addresses never collide with the
//! bench pods' own subnet as long as `--first-ip` is outside it.

use metaguard_common::record::{PodRecord, RECORD_VERSION};
use metaguard_common::state::StateDir;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-records: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut dir = None;
    let mut count: u32 = 10_000;
    let mut network = "mgbench".to_string();
    let mut first: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--state-dir" => dir = Some(val()?),
            "--count" => count = val()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--network" => network = val()?,
            "--first-ip" => first = val()?.parse().map_err(|e| format!("--first-ip: {e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    let dir = dir.ok_or("--state-dir DIR is required")?;
    let state = StateDir::new(&dir);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = u32::from(first);
    let t0 = Instant::now();
    for i in 0..count {
        let ip = base.checked_add(i).ok_or("address range overflows")?;
        let cid = format!("bench{i:059}");
        let mut annotations = BTreeMap::new();
        annotations.insert("bench.example/generated".to_string(), "true".to_string());
        let rec = PodRecord {
            version: RECORD_VERSION,
            container_id: cid.clone(),
            network: network.clone(),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/mgbench-gen-{i}"),
            ips: vec![IpAddr::V4(Ipv4Addr::from(ip))],
            namespace: Some("bench".into()),
            pod_name: Some(format!("pod-{i}")),
            pod_uid: Some(format!("00000000-0000-4000-8000-{i:012}")),
            annotations,
            host_interface: Some(format!("veth{i:08x}")),
            host_guard: true,
            mac: None,
            layer2_guard: false,
            created_unix: now,
        };
        state.write_record(&rec).map_err(|e| e.to_string())?;
    }
    println!(
        "wrote {count} records into {dir} in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
