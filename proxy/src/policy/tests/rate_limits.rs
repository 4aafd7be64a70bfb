//! `rate` and `burst`: per policy, at the top of the file (every policy without its own, presets
//! included), the built-in default; bad values refused with their line.

use super::*;

fn limit(set: &PolicySet, name: &str) -> (f64, u32) {
    let l = set.policy(name).unwrap().rate_limit();
    (l.rate(), l.burst())
}

#[test]
fn without_keys_every_policy_has_the_default() {
    let want = (DEFAULT_RATE, (DEFAULT_RATE * DEFAULT_BURST_SECONDS) as u32);
    let set = PolicySet::builtin_default();
    for name in ["deny-all", "aws", "gcp", "azure", "audit"] {
        assert_eq!(limit(&set, name), want, "{name}");
    }
    let set = PolicySet::from_toml("[[policy]]\nname = \"p\"\n").unwrap();
    assert_eq!(limit(&set, "p"), want);
    assert_eq!(limit(&set, "aws"), want);
}

#[test]
fn a_policy_sets_its_own_and_the_file_sets_the_rest() {
    let set = PolicySet::from_toml(
        r#"
rate = 5
burst = 20
default = "own"

[[policy]]
name = "own"
rate = 2.5
burst = 3

[[policy]]
name = "rate-only"
rate = 50
fallback = "own"

[[policy]]
name = "burst-only"
burst = 7

[[policy]]
name = "inherits"
fallback = "own"
"#,
    )
    .unwrap();
    assert_eq!(limit(&set, "own"), (2.5, 3));
    // `burst` from the file, not ten seconds of the policy's own rate.
    assert_eq!(limit(&set, "rate-only"), (50.0, 20));
    assert_eq!(limit(&set, "burst-only"), (5.0, 7));
    // A fallback lends its rules, not its limit.
    assert_eq!(limit(&set, "inherits"), (5.0, 20));
    // Presets take the file's.
    assert_eq!(limit(&set, "azure"), (5.0, 20));
    assert_eq!(limit(&set, "deny-all"), (5.0, 20));
    let l = set.policy("own").unwrap().rate_limit();
    assert_eq!(l.interval_ns(), 400_000_000);
    assert!(set
        .summary()
        .contains("own: 0 rules, 2.5 requests/s per pod (burst 3)"));
}

#[test]
fn a_rate_alone_gets_ten_seconds_of_burst() {
    let set = PolicySet::from_toml("rate = 0.5\n[[policy]]\nname = \"p\"\nrate = 3\n").unwrap();
    assert_eq!(limit(&set, "p"), (3.0, 30));
    assert_eq!(limit(&set, "aws"), (0.5, 5));
}

#[test]
fn bad_values_are_refused_with_their_line() {
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "rate = 0\n",
            1,
            8,
            "rate must be a number of requests per second from 0.01 to 1000000",
        ),
        ("rate = -5\n", 1, 8, "rate must be"),
        ("rate = 0.001\n", 1, 8, "rate must be"),
        ("rate = 2e6\n", 1, 8, "rate must be"),
        ("rate = nan\n", 1, 8, "rate must be"),
        ("rate = inf\n", 1, 8, "rate must be"),
        ("rate = \"fast\"\n", 1, 0, "invalid type"),
        (
            "burst = 0\n",
            1,
            9,
            "burst must be a whole number of requests from 1 to 1000000",
        ),
        ("burst = -1\n", 1, 9, "burst must be"),
        ("burst = 1000001\n", 1, 9, "burst must be"),
        ("burst = 99999999999\n", 1, 9, "burst must be"),
        ("burst = 2.5\n", 1, 0, "invalid type"),
        ("[[policy]]\nname = \"p\"\nrate = 0\n", 3, 8, "rate must be"),
        (
            "[[policy]]\nname = \"p\"\n\nburst = 0\n",
            4,
            9,
            "burst must be",
        ),
        (
            "[[policy]]\nname = \"p\"\nburst = \"10\"\n",
            3,
            0,
            "invalid type",
        ),
        // In a rule it is no key at all.
        (
            "[[policy]]\nname = \"p\"\n[[policy.rule]]\nid = \"r\"\naction = \"allow\"\nrate = 1\n",
            6,
            1,
            "unknown field",
        ),
    ];
    assert_refused_at(cases);
}

#[test]
fn a_reload_with_a_bad_limit_keeps_the_old_policy() {
    let p = std::env::temp_dir().join(format!("mg-rate-{}.toml", std::process::id()));
    std::fs::write(&p, "rate = 5\ndefault = \"aws\"\n").unwrap();
    let store = store::PolicyStore::new(store::load(Some(&p)).unwrap(), Some(p.clone()));
    std::fs::write(&p, "rate = 5\nburst = 0\ndefault = \"aws\"\n").unwrap();
    let e = store.reload().unwrap_err();
    assert!(
        e.to_string().contains("line 2, column 9: burst must be"),
        "{e}"
    );
    let cur = store.current();
    assert_eq!(cur.set.default_policy().rate_limit().rate(), 5.0);
    std::fs::remove_file(&p).unwrap();
}
