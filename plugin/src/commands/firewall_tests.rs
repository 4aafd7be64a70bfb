//! The commands against the in-memory firewall, without root: ADD undoes what it did when any
//! step fails, DEL and GC gather every error and still remove the rest, and a table of our name
//! with another tag is neither removed nor overwritten.

use super::add::add;
use super::check::check;
use super::del::del;
use super::gc::gc;
use super::{plan, LinkProbe};
use crate::cni::error::{code, CniError};
use crate::cni::result::tests::bridge_result_10;
use crate::cni::{CniArgs, Command, Env};
use crate::config::Config;
use crate::firewall::fake::FakeFirewall;
use crate::firewall::Firewall;
use crate::hostif::LinkKind;
use crate::nft::TAG_PREFIX;
use crate::podlink::{PodLink, PodLinkError};
use crate::rules;
use metaguard_common::state::StateDir;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Host devices: every `veth*` is a veth, `mgbr0` the bridge.
struct Probe;

impl LinkProbe for Probe {
    fn kind(&self, ifname: &str) -> std::io::Result<Option<LinkKind>> {
        Ok(match ifname {
            "mgbr0" => Some(LinkKind::Bridge),
            n if n.starts_with("veth") => Some(LinkKind::Veth),
            _ => None,
        })
    }
    fn pod_link(&self, _: &Path, _: &str) -> Result<PodLink, PodLinkError> {
        Ok(PodLink {
            mac: None,
            link_locals: vec!["fe80::99".parse().unwrap()],
        })
    }
}

/// A state directory of its own, removed at the end of the test.
struct TempState {
    dir: PathBuf,
    state: StateDir,
}

impl TempState {
    fn new() -> TempState {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "metaguard-commands-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempState {
            state: StateDir::new(&dir),
            dir,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.state.list_keys().unwrap()
    }

    fn has_record(&self, key: &str) -> bool {
        self.state.record_path(key).exists()
    }
}

impl Drop for TempState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Attachment `c<n>` of network `net`: its own namespace, host veth and addresses.
struct Pod {
    env: Env,
    cfg: Config,
    netns: String,
    key: String,
    table: String,
}

fn pod(net: &str, n: u8) -> Pod {
    pod_with_address(net, n, n)
}

/// Attachment `c<n>` of network `net` with the addresses of attachment `a` (10.99.1.a,
/// fd99:1::a): two networks whose ranges overlap.
fn pod_with_address(net: &str, n: u8, a: u8) -> Pod {
    let netns = format!("/var/run/netns/pod{n}");
    let mut prev = bridge_result_10();
    prev["interfaces"][1]["name"] = json!(format!("veth{n}"));
    prev["interfaces"][2]["sandbox"] = json!(netns);
    prev["ips"][0]["address"] = json!(format!("10.99.1.{a}/24"));
    prev["ips"][1]["address"] = json!(format!("fd99:1::{a}/64"));
    let cfg = json!({"cniVersion": "1.1.0", "name": net, "type": "metaguard", "prevResult": prev});
    let env = Env {
        command: Command::Add,
        container_id: Some(format!("c{n}")),
        netns: Some(netns.clone()),
        ifname: Some("eth0".into()),
        args: CniArgs::parse("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web").unwrap(),
        path: None,
    };
    let key = format!("{net}:c{n}:eth0");
    Pod {
        cfg: Config::parse(&serde_json::to_vec(&cfg).unwrap(), Command::Add).unwrap(),
        table: rules::table_name(&key),
        env,
        netns,
        key,
    }
}

fn add_pod(p: &Pod, st: &TempState, fw: &FakeFirewall) -> Result<Value, CniError> {
    add(&p.env, &p.cfg, &st.state, &Probe, fw)
}

fn del_pod(p: &Pod, st: &TempState, fw: &FakeFirewall) -> Result<(), CniError> {
    del(&p.env, &p.cfg, &st.state, fw)
}

fn check_pod(p: &Pod, st: &TempState, fw: &FakeFirewall) -> Result<(), CniError> {
    check(&p.env, &p.cfg, &st.state, &Probe, fw)
}

/// A firewall where pod 1's namespace exists, and a fresh state directory.
fn fresh(p: &Pod) -> (FakeFirewall, TempState) {
    (FakeFirewall::with_netns(&[&p.netns]), TempState::new())
}

/// Nothing of the attachment is left: no table in the pod, no guard, no record, no address entry.
fn assert_nothing_left(p: &Pod, st: &TempState, fw: &FakeFirewall, when: &str) {
    assert_eq!(fw.pod_tables(), Vec::<String>::new(), "{when}");
    assert_eq!(fw.guards(), Vec::<String>::new(), "{when}");
    assert!(!st.has_record(&p.key), "{when}");
    let ips = std::fs::read_dir(st.state.ips_dir()).map_or(0, |d| d.count());
    assert_eq!(ips, 0, "{when}");
}

#[test]
fn add_installs_pod_rules_then_guard_then_record() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    let out = add_pod(&p, &st, &fw).unwrap();
    assert_eq!(out["ips"][0]["address"], "10.99.1.1/24");
    let planned = plan(&p.env, &p.cfg, p.cfg.prev_result.as_ref().unwrap(), &Probe).unwrap();
    assert_eq!(
        fw.steps(),
        vec![
            format!("open netns {}", p.netns),
            format!("apply pod rules {} in {}", p.table, p.netns),
            format!("apply host guard {} on veth1", p.table),
        ]
    );
    let table = fw.pod_table(&p.netns, &p.table).unwrap();
    assert_eq!(table.content, Some(planned.pod));
    assert_eq!(table.comment, Some(format!("{TAG_PREFIX}{}", p.key)));
    assert_eq!(fw.guard(&p.table).unwrap().content, planned.guard);
    let rec = st.state.read_record(&p.key).unwrap().unwrap();
    assert!(rec.host_guard);

    // A repeated ADD re-applies the same tables and leaves the identical record alone.
    add_pod(&p, &st, &fw).unwrap();
    assert_eq!(st.state.read_record(&p.key).unwrap(), Some(rec));
    assert_eq!(fw.pod_tables().len(), 1);
    check_pod(&p, &st, &fw).unwrap();
}

#[test]
fn add_failing_at_any_step_leaves_nothing_behind() {
    let p = pod("mgnet", 1);
    let steps = {
        let (fw, st) = fresh(&p);
        add_pod(&p, &st, &fw).unwrap();
        fw.steps().len()
    };
    assert_eq!(steps, 3);
    for n in 1..=steps {
        let (fw, st) = fresh(&p);
        fw.fail_at(n);
        let e = add_pod(&p, &st, &fw).unwrap_err();
        let when = format!("failing at step {n}: {e}; steps {:?}", fw.steps());
        match n {
            1 => {
                assert_eq!(e.code, code::IO, "{when}");
                assert_eq!(e.msg, "cannot open the pod's network namespace", "{when}");
            }
            2 => assert_eq!(
                e.msg, "nf_tables: installing the pod's rules failed",
                "{when}"
            ),
            _ => assert_eq!(
                e.msg, "nf_tables: installing the host guard failed",
                "{when}"
            ),
        }
        if n > 1 {
            assert_eq!(e.code, code::NFTABLES, "{when}");
            assert!(e.details.contains(&format!("fake step {n}")), "{when}");
        }
        assert_nothing_left(&p, &st, &fw, &when);
    }
}

#[test]
fn add_failing_to_write_the_record_undoes_the_rules() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    // The record itself is written, then its address entry cannot be (a directory is in the
    // way): the record must go again, with both tables.
    let entry = st.state.ip_path(&"fd99:1::1".parse().unwrap());
    std::fs::create_dir_all(entry.join("in-the-way")).unwrap();
    let e = add_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(e.code, code::IO, "{e}");
    assert_eq!(e.msg, "state directory: writing the pod record failed");
    assert!(!st.has_record(&p.key));
    assert_eq!(fw.pod_tables(), Vec::<String>::new());
    assert_eq!(fw.guards(), Vec::<String>::new());
    // Undone in reverse order: the guard, then the pod's table.
    assert_eq!(
        fw.steps()[3..],
        [
            format!("remove host guard {}", p.table),
            format!("remove pod rules {} in {}", p.table, p.netns),
        ]
    );
}

#[test]
fn add_does_not_overwrite_a_guard_with_another_tag() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    let other = format!("{TAG_PREFIX}mgnet:collides:eth0");
    fw.put_foreign_guard(&p.table, Some(&other));
    let e = add_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(e.code, code::NFTABLES, "{e}");
    assert!(e.details.contains("not this attachment's tag"), "{e}");
    let kept = fw.guard(&p.table).unwrap();
    assert_eq!((kept.comment, kept.content), (Some(other), None));
    // What this ADD did itself is undone; nothing is recorded.
    assert_eq!(fw.pod_tables(), Vec::<String>::new());
    assert!(!st.has_record(&p.key));
}

#[test]
fn add_does_not_overwrite_a_pod_table_with_another_tag() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    fw.put_foreign_pod_table(&p.netns, &p.table, None);
    let e = add_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(e.code, code::NFTABLES, "{e}");
    let kept = fw.pod_table(&p.netns, &p.table).unwrap();
    assert_eq!((kept.comment, kept.content), (None, None));
    assert_eq!(fw.guards(), Vec::<String>::new());
    assert!(!st.has_record(&p.key));
}

#[test]
fn add_refuses_a_missing_netns_before_touching_anything() {
    let p = pod("mgnet", 1);
    let (fw, st) = (FakeFirewall::default(), TempState::new());
    let e = add_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(e.code, code::INVALID_ENV, "{e}");
    assert_eq!(e.details, format!("{} does not exist", p.netns));
    assert_eq!(fw.steps().len(), 1);
    assert_nothing_left(&p, &st, &fw, "missing netns");
}

#[test]
fn del_removes_everything_and_is_idempotent() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    add_pod(&p, &st, &fw).unwrap();
    del_pod(&p, &st, &fw).unwrap();
    assert_nothing_left(&p, &st, &fw, "after DEL");
    del_pod(&p, &st, &fw).unwrap();
    // Without ADD ever having run, too.
    let q = pod("mgnet", 2);
    del_pod(&q, &st, &fw).unwrap();
}

#[test]
fn del_failing_at_any_step_removes_the_rest() {
    let p = pod("mgnet", 1);
    for n in 1..=3 {
        let (fw, st) = fresh(&p);
        add_pod(&p, &st, &fw).unwrap();
        let added = fw.steps().len();
        fw.fail_at(added + n);
        let e = del_pod(&p, &st, &fw).unwrap_err();
        let when = format!("failing at DEL step {n}: {e}; steps {:?}", fw.steps());
        // A namespace that cannot be opened has no table to remove.
        let del_steps = if n == 1 { 2 } else { 3 };
        assert_eq!(fw.steps().len(), added + del_steps, "{when}");
        // The record goes whatever failed; of the tables, only the one that failed stays.
        assert!(!st.has_record(&p.key), "{when}");
        let pod_left = fw.pod_table(&p.netns, &p.table).is_some();
        let guard_left = fw.guard(&p.table).is_some();
        match n {
            1 => assert_eq!(
                (e.code, e.msg.as_str()),
                (code::IO, "cannot open the pod's network namespace")
            ),
            2 => assert_eq!(e.msg, "nf_tables: deleting the pod's table failed"),
            _ => assert_eq!(e.msg, "nf_tables: deleting the host guard failed"),
        }
        assert_eq!(e.code == code::NFTABLES, n > 1, "{when}");
        assert_eq!((pod_left, guard_left), (n < 3, n == 3), "{when}");
    }
}

#[test]
fn del_reports_every_error_together() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    add_pod(&p, &st, &fw).unwrap();
    // A corrupt record, and every firewall step failing.
    std::fs::write(st.state.record_path(&p.key), b"{").unwrap();
    fw.fail_from(fw.steps().len() + 1);
    let e = del_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(e.msg, "DEL incomplete: 3 errors", "{e}");
    assert_eq!(e.code, code::IO);
    for part in [
        "state directory: reading the pod record failed",
        "cannot open the pod's network namespace",
        "nf_tables: deleting the host guard failed",
    ] {
        assert!(e.details.contains(part), "{part}: {e}");
    }
    assert!(!st.has_record(&p.key));
}

#[test]
fn del_leaves_tables_with_another_tag() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    let other = format!("{TAG_PREFIX}mgnet:collides:eth0");
    fw.put_foreign_pod_table(&p.netns, &p.table, Some(&other));
    fw.put_foreign_guard(&p.table, None);
    del_pod(&p, &st, &fw).unwrap();
    assert_eq!(
        fw.pod_table(&p.netns, &p.table).unwrap().comment,
        Some(other)
    );
    assert_eq!(fw.guard(&p.table).unwrap().comment, None);
}

#[test]
fn del_after_the_netns_is_gone() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    add_pod(&p, &st, &fw).unwrap();
    fw.remove_netns(&p.netns);
    del_pod(&p, &st, &fw).unwrap();
    assert_nothing_left(&p, &st, &fw, "netns gone");
}

// --- overlapping addresses (issue 14 item 5) ---

/// Who `ip`'s entry names.
fn entry_owner(st: &TempState, ip: &str) -> Option<String> {
    st.state.owner_of(&ip.parse().unwrap()).unwrap()
}

#[test]
fn an_address_another_live_attachment_holds_is_refused_before_anything_is_installed() {
    // Pod 1 on neta and pod 2 on netb got the same addresses from overlapping ranges.
    let a = pod_with_address("neta", 1, 1);
    let b = pod_with_address("netb", 2, 1);
    let fw = FakeFirewall::with_netns(&[&a.netns, &b.netns]);
    let st = TempState::new();
    add_pod(&a, &st, &fw).unwrap();
    let before = fw.steps().len();
    let e = add_pod(&b, &st, &fw).unwrap_err();
    assert_eq!(e.code, code::ADDRESS_IN_USE, "{e}");
    assert_eq!(
        e.msg,
        "address 10.99.1.1 is in use by container c1 on network neta (interface eth0) (and 1 more)"
    );
    for part in [
        "fd99:1::1 is in use by container c1 on network neta",
        "\"ns/web\"",
        "/var/run/netns/pod1",
        "still exists",
        "netb:c2:eth0 was not set up",
    ] {
        assert!(e.details.contains(part), "{part}: {e}");
    }
    // Only the holder's namespace was looked at (once per address): nothing of b's installed.
    assert_eq!(
        fw.steps()[before..],
        [
            format!("open netns {}", a.netns),
            format!("open netns {}", a.netns)
        ]
    );
    assert_eq!(fw.pod_tables(), vec![format!("{}/{}", a.netns, a.table)]);
    assert_eq!(fw.guards(), vec![a.table.clone()]);
    assert_eq!(st.keys(), vec![a.key.clone()]);
    for ip in ["10.99.1.1", "fd99:1::1"] {
        assert_eq!(entry_owner(&st, ip), Some(a.key.clone()), "{ip}");
    }
    // The holder repeating its ADD is not refused, and is still whole.
    add_pod(&a, &st, &fw).unwrap();
    check_pod(&a, &st, &fw).unwrap();
}

#[test]
fn one_pod_on_two_overlapping_networks_is_refused_too() {
    // The same container and namespace: still two attachments, and one identity per address.
    let a = pod_with_address("neta", 1, 1);
    let b = pod_with_address("netb", 1, 1);
    let (fw, st) = fresh(&a);
    add_pod(&a, &st, &fw).unwrap();
    let e = add_pod(&b, &st, &fw).unwrap_err();
    assert_eq!(e.code, code::ADDRESS_IN_USE, "{e}");
    assert_eq!(st.keys(), vec![a.key.clone()]);
    // A second interface of the same pod on the same network, likewise.
    let mut c = pod_with_address("neta", 1, 1);
    c.env.ifname = Some("net1".into());
    let e = add(&c.env, &c.cfg, &st.state, &Probe, &fw).unwrap_err();
    assert_eq!(e.code, code::ADDRESS_IN_USE, "{e}");
}

#[test]
fn an_address_whose_holder_is_gone_is_taken_over_and_the_old_del_leaves_it() {
    let a = pod_with_address("neta", 1, 1);
    let b = pod_with_address("netb", 2, 1);
    let fw = FakeFirewall::with_netns(&[&a.netns, &b.netns]);
    let st = TempState::new();
    add_pod(&a, &st, &fw).unwrap();
    // a's pod went away without a DEL: its namespace is gone, its record stays.
    fw.remove_netns(&a.netns);
    add_pod(&b, &st, &fw).unwrap();
    for ip in ["10.99.1.1", "fd99:1::1"] {
        assert_eq!(entry_owner(&st, ip), Some(b.key.clone()), "{ip}");
    }
    check_pod(&b, &st, &fw).unwrap();
    // a's DEL, late, removes a's record and never b's entries.
    del_pod(&a, &st, &fw).unwrap();
    assert_eq!(st.keys(), vec![b.key.clone()]);
    for ip in ["10.99.1.1", "fd99:1::1"] {
        assert_eq!(entry_owner(&st, ip), Some(b.key.clone()), "{ip}");
    }
    check_pod(&b, &st, &fw).unwrap();
}

#[test]
fn stale_and_junk_entries_are_not_holders() {
    let a = pod_with_address("neta", 1, 1);
    let b = pod_with_address("netb", 2, 1);
    let fw = FakeFirewall::with_netns(&[&a.netns, &b.netns]);
    let st = TempState::new();
    add_pod(&a, &st, &fw).unwrap();
    // a's record lost (the entries remain): they name a record that does not list them.
    std::fs::remove_file(st.state.record_path(&a.key)).unwrap();
    // One entry is not even a key.
    std::fs::write(st.state.ip_path(&"fd99:1::1".parse().unwrap()), b"junk").unwrap();
    add_pod(&b, &st, &fw).unwrap();
    for ip in ["10.99.1.1", "fd99:1::1"] {
        assert_eq!(entry_owner(&st, ip), Some(b.key.clone()), "{ip}");
    }
}

#[test]
fn a_holder_that_cannot_be_read_is_not_taken_over() {
    let a = pod_with_address("neta", 1, 1);
    let b = pod_with_address("netb", 2, 1);
    let fw = FakeFirewall::with_netns(&[&a.netns, &b.netns]);
    let st = TempState::new();
    add_pod(&a, &st, &fw).unwrap();
    let good = std::fs::read(st.state.record_path(&a.key)).unwrap();
    let mut relative: Value = serde_json::from_slice(&good).unwrap();
    relative["netns"] = json!("netns/pod1");
    let mut failing = relative.clone();
    failing["netns"] = json!("/var/run/netns/unreadable");
    for (body, says) in [
        (b"{".to_vec(), "record cannot be read"),
        (
            serde_json::to_vec(&relative).unwrap(),
            "is not an absolute path",
        ),
        (serde_json::to_vec(&failing).unwrap(), "cannot be told"),
    ] {
        std::fs::write(st.state.record_path(&a.key), &body).unwrap();
        let fw = FakeFirewall::with_netns(&[&b.netns]);
        // The holder's namespace cannot be opened (EIO): not known to be gone.
        fw.fail_at(1);
        let e = add_pod(&b, &st, &fw).unwrap_err();
        assert_eq!(e.code, code::ADDRESS_IN_USE, "{e}");
        assert!(e.msg.contains("container c1 on network neta"), "{e}");
        assert!(e.details.contains(says), "{says}: {e}");
        assert_eq!(fw.pod_tables(), Vec::<String>::new(), "{says}");
        assert_eq!(entry_owner(&st, "10.99.1.1"), Some(a.key.clone()));
        assert!(!st.has_record(&b.key));
    }
}

#[test]
fn check_reports_an_address_entry_that_names_another_attachment() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    add_pod(&p, &st, &fw).unwrap();
    check_pod(&p, &st, &fw).unwrap();
    let entry = st.state.ip_path(&"fd99:1::1".parse().unwrap());
    std::fs::write(&entry, b"othernet:c9:eth0").unwrap();
    let e = check_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(
        (e.code, e.msg.as_str()),
        (code::CHECK_FAILED, "CHECK failed: address entry")
    );
    assert!(e.details.contains("names othernet:c9:eth0"), "{e}");
    std::fs::remove_file(&entry).unwrap();
    let e = check_pod(&p, &st, &fw).unwrap_err();
    assert!(e.details.contains("nothing (missing)"), "{e}");
    // A repeat ADD repairs it.
    add_pod(&p, &st, &fw).unwrap();
    check_pod(&p, &st, &fw).unwrap();
}

#[test]
fn of_two_adds_racing_for_an_address_the_later_one_undoes_its_rules() {
    let a = pod_with_address("neta", 1, 1);
    let b = pod_with_address("netb", 2, 1);
    let fw = FakeFirewall::with_netns(&[&a.netns, &b.netns]);
    let st = TempState::new();
    // b passes its first check; while it installs its guard (step 3), a's ADD (another
    // process, its own view of the kernel) completes.
    let (a_env, a_cfg, a_netns, state) = (
        a.env.clone(),
        a.cfg.clone(),
        a.netns.clone(),
        st.state.clone(),
    );
    fw.before_step(3, move || {
        let other = FakeFirewall::with_netns(&[&a_netns]);
        add(&a_env, &a_cfg, &state, &Probe, &other).unwrap();
    });
    let e = add_pod(&b, &st, &fw).unwrap_err();
    assert_eq!(e.code, code::ADDRESS_IN_USE, "{e}");
    // b's tables undone, a's record and entries untouched.
    assert_eq!(fw.pod_tables(), Vec::<String>::new());
    assert_eq!(fw.guards(), Vec::<String>::new());
    assert_eq!(st.keys(), vec![a.key.clone()]);
    for ip in ["10.99.1.1", "fd99:1::1"] {
        assert_eq!(entry_owner(&st, ip), Some(a.key.clone()), "{ip}");
    }
    assert_eq!(
        fw.steps()[2..],
        [
            format!("apply host guard {} on veth2", b.table),
            format!("open netns {}", a.netns),
            format!("open netns {}", a.netns),
            format!("remove host guard {}", b.table),
            format!("remove pod rules {} in {}", b.table, b.netns),
        ]
    );
}

#[test]
fn check_reports_each_problem() {
    let p = pod("mgnet", 1);
    let (fw, st) = fresh(&p);
    add_pod(&p, &st, &fw).unwrap();
    check_pod(&p, &st, &fw).unwrap();
    assert!(fw.remove_host_guard(&p.table, &p.key).unwrap().removed());
    let e = check_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(
        (e.code, e.msg.as_str()),
        (code::CHECK_FAILED, "CHECK failed: host guard")
    );
    // An nf_tables failure stays one (code 100), listed with the mismatch.
    fw.fail_at(fw.steps().len() + 2);
    let e = check_pod(&p, &st, &fw).unwrap_err();
    assert_eq!(
        (e.code, e.msg.as_str()),
        (code::NFTABLES, "CHECK failed: 2 errors")
    );
}

/// Attachments 1-3 of `mgnet` (1 still valid), 4 of `othernet`, an orphaned `mgnet` guard (5)
/// without a record, a `mgnet` tag on a table not named after it (6) and an untagged table.
fn gc_setup() -> (FakeFirewall, TempState, Vec<Pod>, Config) {
    let pods: Vec<Pod> = [1, 2, 3]
        .into_iter()
        .map(|n| pod("mgnet", n))
        .chain([pod("othernet", 4)])
        .collect();
    let netns: Vec<&str> = pods.iter().map(|p| p.netns.as_str()).collect();
    let fw = FakeFirewall::with_netns(&netns);
    let st = TempState::new();
    for p in &pods {
        add_pod(p, &st, &fw).unwrap();
    }
    let orphan = pod("mgnet", 5);
    fw.put_foreign_guard(&orphan.table, Some(&format!("{TAG_PREFIX}{}", orphan.key)));
    fw.put_foreign_guard(
        "metaguard-misnamed",
        Some(&format!("{TAG_PREFIX}mgnet:c6:eth0")),
    );
    fw.put_foreign_guard("someone-elses", None);
    let cfg = json!({"cniVersion": "1.1.0", "name": "mgnet", "type": "metaguard",
        "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]});
    let cfg = Config::parse(&serde_json::to_vec(&cfg).unwrap(), Command::Gc).unwrap();
    (fw, st, pods, cfg)
}

#[test]
fn gc_removes_stale_attachments_of_its_network_only() {
    let (fw, st, pods, cfg) = gc_setup();
    gc(&cfg, &st.state, &fw).unwrap();
    let [p1, p2, p3, p4] = &pods[..] else {
        unreachable!()
    };
    assert_eq!(st.keys(), vec![p1.key.clone(), p4.key.clone()]);
    let mut guards = vec![
        p1.table.clone(),
        p4.table.clone(),
        "metaguard-misnamed".into(),
        "someone-elses".into(),
    ];
    guards.sort();
    assert_eq!(fw.guards(), guards);
    for p in [p2, p3] {
        assert!(fw.pod_table(&p.netns, &p.table).is_none(), "{}", p.key);
    }
    for p in [p1, p4] {
        assert!(fw.pod_table(&p.netns, &p.table).is_some(), "{}", p.key);
    }
}

#[test]
fn gc_failing_at_any_step_removes_everything_else() {
    // The steps of a GC that succeeds, by description.
    let gc_steps = {
        let (fw, st, _, cfg) = gc_setup();
        let before = fw.steps().len();
        gc(&cfg, &st.state, &fw).unwrap();
        fw.steps()[before..].to_vec()
    };
    assert_eq!(gc_steps.len(), 3 + 3 + 2, "{gc_steps:?}");
    let orphan = pod("mgnet", 5).table;
    for (i, what) in gc_steps.iter().enumerate() {
        let (fw, st, pods, cfg) = gc_setup();
        fw.fail_at(fw.steps().len() + i + 1);
        let e = gc(&cfg, &st.state, &fw).unwrap_err();
        let when = format!("failing at {what:?}: {e}");
        // One error, reported as it is.
        assert!(!e.msg.starts_with("GC incomplete"), "{when}");
        // Records go whatever failed.
        assert_eq!(st.keys(), vec![pods[0].key.clone(), pods[3].key.clone()]);
        // Of the stale tables only the one the failed step was about stays. A guard whose
        // removal failed during a record's teardown is found again among the orphans.
        let pods_left: Vec<&str> = pods[1..3]
            .iter()
            .filter(|p| fw.pod_table(&p.netns, &p.table).is_some())
            .map(|p| p.netns.as_str())
            .collect();
        let guards_left: Vec<&str> = [&pods[1].table, &pods[2].table, &orphan]
            .into_iter()
            .filter(|t| fw.guard(t).is_some())
            .map(String::as_str)
            .collect();
        let (want_pods, want_guards): (Vec<&str>, Vec<&str>) = match what {
            w if w.starts_with("open netns") || w.starts_with("remove pod rules") => {
                let p = pods[1..3].iter().find(|p| w.ends_with(&p.netns)).unwrap();
                (vec![p.netns.as_str()], vec![])
            }
            w if w == "list host guards" || w.ends_with(orphan.as_str()) => {
                (vec![], vec![orphan.as_str()])
            }
            _ => (vec![], vec![]),
        };
        assert_eq!((pods_left, guards_left), (want_pods, want_guards), "{when}");
    }
}

#[test]
fn gc_reports_every_error_together() {
    let (fw, st, pods, cfg) = gc_setup();
    fw.fail_from(fw.steps().len() + 1);
    let e = gc(&cfg, &st.state, &fw).unwrap_err();
    // Per stale record: opening its netns and deleting its guard; then listing the guards.
    assert_eq!(e.msg, "GC incomplete: 5 errors", "{e}");
    assert!(e.details.contains("listing host guard tables"), "{e}");
    // The records go anyway.
    assert_eq!(st.keys(), vec![pods[0].key.clone(), pods[3].key.clone()]);
}
