//! The adversarial HTTP suite (issue 5): every case of `tests/src/corpus.rs`, as raw bytes over TCP
//! from inside a pod namespace to 169.254.169.254:80, through the real path: the metaguard plugin's
//! redirect (pod attached by Debian's bridge + host-local, then metaguard), metaguard-proxy in the
//! node namespace, and fake-metadata in a "cloud" namespace at 169.254.169.254 recording every
//! request it receives.
//!
//! Each preset runs in its own phase with its own proxy, whose upstream is a port of 169.254.169.254
//! reserved for that phase, so the fake's record says which policy was in force for every request
//! that reached it, even one that arrived late. The fake on port 80 must record nothing at all: a
//! request there escaped the redirect.
//!
//! The judge of the invariant is the fake's record, checked after the whole run: no denied resource
//! (credentials, user-data, kube-env, service-account tokens and identities, `recursive` outside the
//! service-accounts tree, managed identity; near-miss names of them too), no target the proxy
//! should have refused as ambiguous, no forwarding header, no non-HTTP bytes. Also no secret in any
//! answer a pod got (outside audit).
//!
//! Run: `cargo build --workspace --bins && cargo test -p metaguard-tests --test adversarial -- --nocapture`.

use metaguard_tests::cni::Node;
use metaguard_tests::corpus::{self, Case, Category, Preset, HEADER_TIMEOUT};
use metaguard_tests::fake::{FakeMetadata, Recorded, SECRET_MARKER};
use metaguard_tests::proxy::{Cloud, Proxy, ProxyOptions, IMDS_V4};
use metaguard_tests::raw::{self, Exchange, ReadOpts};
use metaguard_tests::verdict::{self, Violation};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Phases in this order: audit first, so a request arriving late from a permissive phase would be
/// judged under a stricter one (a false alarm, never a miss). Listener attribution makes that moot,
/// but the order costs nothing.
const PHASES: [Preset; 5] = [
    Preset::Audit,
    Preset::Aws,
    Preset::Gcp,
    Preset::Azure,
    Preset::DenyAll,
];
/// Upstream port of each phase on the fake (169.254.169.254:<port>).
const PHASE_PORT_BASE: u16 = 8001;
/// Connections sent at once within a phase (the proxy allows 64 per pod by default).
const WORKERS: usize = 4;
/// Wait this long for a response beyond the expected ones (none must come).
const GRACE: Duration = Duration::from_millis(150);

struct Outcome {
    case: Case,
    result: Result<(), String>,
    leaked_secret: bool,
    elapsed: Duration,
}

fn phase_port(p: Preset) -> u16 {
    PHASE_PORT_BASE + PHASES.iter().position(|x| *x == p).unwrap() as u16
}

fn proxy_config() -> String {
    format!(
        "[limits]\nheader_read_timeout_ms = {}\n\n[upstream]\nresponse_timeout_ms = 3000\n",
        HEADER_TIMEOUT.as_millis()
    )
}

fn run_case(netns: &std::path::Path, case: &Case) -> Outcome {
    let start = Instant::now();
    let opts = ReadOpts {
        deadline: case.deadline(),
        max_responses: case.max_responses(),
        head_request: case.is_head(),
    };
    let target: SocketAddr = format!("{IMDS_V4}:80").parse().unwrap();
    let ex: Exchange = raw::send_expecting(
        netns,
        target,
        &case.steps(),
        opts,
        verdict::expected_responses(case.expect),
        GRACE,
    );
    let mut result = verdict::judge(case.expect, &ex);
    // A cut-off slow request must be cut off in bounded time: the header timeout plus margin
    // (the trickle itself lasts twice the timeout, so a proxy without one fails here).
    if case.category == Category::Slow
        && result.is_ok()
        && ex.elapsed > HEADER_TIMEOUT * 2 + Duration::from_secs(3)
    {
        result = Err(format!(
            "took {:?}, longer than the header timeout allows",
            ex.elapsed
        ));
    }
    let leaked_secret = ex
        .responses
        .iter()
        .any(|r| contains(&r.body, SECRET_MARKER.as_bytes()));
    Outcome {
        case: *case,
        result,
        leaked_secret,
        elapsed: start.elapsed(),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs `cases` with `WORKERS` threads; slow cases first so they overlap the quick ones.
fn run_phase(netns: &std::path::Path, cases: &[Case]) -> Vec<Outcome> {
    let mut queue: Vec<Case> = cases.to_vec();
    queue.sort_by_key(|c| c.category != Category::Slow);
    let queue = Mutex::new(queue.into_iter());
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().next();
                let Some(case) = next else { break };
                let o = run_case(netns, &case);
                out.lock().unwrap().push(o);
            });
        }
    });
    out.into_inner().unwrap()
}

#[test]
fn adversarial_corpus() {
    let run_start = Instant::now();
    let cases = corpus::cases_all_presets();
    let node = Node::new();
    let cloud = Cloud::attach(&node.ns);
    let ip: std::net::IpAddr = IMDS_V4.parse().unwrap();
    let phase_listen: Vec<SocketAddr> = PHASES
        .iter()
        .map(|p| SocketAddr::new(ip, phase_port(*p)))
        .collect();
    let upstream =
        FakeMetadata::start_in_netns(cloud.ns.name(), &phase_listen).expect("start phase fake");
    let pod = node.pod("1.0.0");

    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut phase_times = Vec::new();
    for preset in PHASES {
        let phase_cases: Vec<Case> = cases
            .iter()
            .filter(|c| c.preset == preset)
            .copied()
            .collect();
        let t = Instant::now();
        let mut opts = ProxyOptions::new(node.ns.name(), &node.state_dir())
            .policy(&format!("default = \"{}\"\n", preset.name()))
            .config(&proxy_config());
        opts.upstream = vec![("imds-v4".into(), SocketAddr::new(ip, phase_port(preset)))];
        let mut proxy = Proxy::start(opts);
        proxy.wait_ready();
        outcomes.extend(run_phase(pod.ns.path(), &phase_cases));
        // SIGTERM drains what is in flight: after this, nothing more of this phase can arrive.
        let status = proxy.stop();
        assert!(
            status.is_some(),
            "proxy for {} did not stop on SIGTERM",
            preset.name()
        );
        phase_times.push((preset, phase_cases.len(), t.elapsed()));
    }

    // The invariant, over everything the metadata service received.
    let mut violations: Vec<(String, Violation)> = Vec::new();
    let records: Vec<Recorded> = upstream.requests();
    let mut reached: BTreeMap<&str, usize> = BTreeMap::new();
    for rec in &records {
        let port = rec.local_addr().map(|a| a.port()).unwrap_or(0);
        let Some(preset) = PHASES.iter().copied().find(|p| phase_port(*p) == port) else {
            violations.push((
                "?".into(),
                Violation {
                    target: rec.target.clone(),
                    why: format!("arrived on unexpected port {port}"),
                },
            ));
            continue;
        };
        *reached.entry(preset.name()).or_default() += 1;
        for v in verdict::violations(rec, preset == Preset::Audit, preset == Preset::DenyAll) {
            violations.push((preset.name().into(), v));
        }
    }
    for rec in cloud.fake.requests() {
        violations.push((
            "redirect".into(),
            Violation {
                target: rec.target.clone(),
                why: "reached 169.254.169.254:80 directly".into(),
            },
        ));
    }
    for o in &outcomes {
        if o.leaked_secret && o.case.preset != Preset::Audit {
            violations.push((
                o.case.preset.name().into(),
                Violation {
                    target: o.case.id.into(),
                    why: "a secret was in the answer the pod got".into(),
                },
            ));
        }
    }
    // The detector must be able to see a leak: under audit, user-data is allowed and must arrive.
    let audit_saw_secret = records.iter().any(|r| {
        r.local_addr().map(|a| a.port()) == Some(phase_port(Preset::Audit))
            && verdict::denied_resource(&r.target).is_some()
    });
    // And it must see near-miss names: under audit every near miss the canonicaliser accepts is
    // forwarded, arrives, and is read as the secret it nearly names. Their absence under the
    // cloud presets then means the presets stopped them.
    let audit_targets: Vec<&str> = records
        .iter()
        .filter(|r| r.local_addr().map(|a| a.port()) == Some(phase_port(Preset::Audit)))
        .map(|r| r.target.as_str())
        .collect();
    let near_miss_controls: Vec<String> = outcomes
        .iter()
        .filter(|o| {
            o.case.category == Category::NearMiss
                && o.case.preset == Preset::Audit
                && !o.case.expect.policy_independent()
        })
        .filter_map(|o| o.case.target())
        .collect();
    let near_miss_unseen: Vec<&String> = near_miss_controls
        .iter()
        .filter(|t| !audit_targets.contains(&t.as_str()) || verdict::denied_resource(t).is_none())
        .collect();

    // Summary.
    let mut by_cat: BTreeMap<Category, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let e = by_cat.entry(o.case.category).or_default();
        if o.result.is_ok() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let passed = outcomes.iter().filter(|o| o.result.is_ok()).count();
    let failed = outcomes.len() - passed;
    println!(
        "\n=== adversarial corpus: {} distinct cases, {} runs (policy-independent cases also under audit and deny-all) ===",
        corpus::cases().len(),
        outcomes.len()
    );
    println!(
        "{:<12} {:>6} {:>7} {:>7}",
        "category", "cases", "passed", "failed"
    );
    for cat in Category::ALL {
        let (p, f) = by_cat.get(&cat).copied().unwrap_or_default();
        println!("{:<12} {:>6} {:>7} {:>7}", cat.name(), p + f, p, f);
    }
    println!(
        "{:<12} {:>6} {:>7} {:>7}",
        "total",
        outcomes.len(),
        passed,
        failed
    );
    println!("\nphase      cases  reached-upstream  time");
    for (p, n, t) in &phase_times {
        println!(
            "{:<10} {:>5} {:>17}  {:.1}s",
            p.name(),
            n,
            reached.get(p.name()).copied().unwrap_or(0),
            t.as_secs_f64()
        );
    }
    let slowest = outcomes
        .iter()
        .max_by_key(|o| o.elapsed)
        .map(|o| (o.case.id, o.elapsed));
    println!(
        "slowest case: {slowest:?}; whole run {:.1}s",
        run_start.elapsed().as_secs_f64()
    );
    println!(
        "requests recorded by the metadata service: {} (phase ports) + {} (port 80); violations: {}",
        records.len(),
        cloud.fake.requests().len(),
        violations.len()
    );
    let mut fails: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    fails.sort_by_key(|o| o.case.id);
    for o in &fails {
        println!(
            "FAIL {} [{} / {}]: {}",
            o.case.id,
            o.case.category.name(),
            o.case.preset.name(),
            o.result.as_ref().unwrap_err()
        );
    }
    for (phase, v) in &violations {
        println!("VIOLATION [{phase}] {:?}: {}", v.target, v.why);
    }
    println!(
        "near-miss control: {} near-miss requests forwarded under audit, {} not seen as a secret by the judge",
        near_miss_controls.len(),
        near_miss_unseen.len()
    );
    println!("adversarial: {passed} passed, {failed} failed");

    assert!(
        audit_saw_secret,
        "self-check: the audit phase's allowed user-data request never reached the fake"
    );
    assert!(
        !near_miss_controls.is_empty() && near_miss_unseen.is_empty(),
        "self-check: near-miss requests under audit that did not arrive or were not read as secrets: {near_miss_unseen:?}"
    );
    assert!(
        violations.is_empty(),
        "{} requests reached the metadata service that should not have",
        violations.len()
    );
    assert_eq!(
        failed, 0,
        "{failed} adversarial cases failed (listed above)"
    );
}
