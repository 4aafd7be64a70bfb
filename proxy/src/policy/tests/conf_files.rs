//! The policy files under conf/policies and the examples in docs/policy.md.

use super::*;

fn conf(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf/policies")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each `conf/policies/preset-<name>.toml` is the preset spelled out under another name: it must
/// compile to exactly the same rules.
#[test]
fn conf_preset_expansions_match_builtins() {
    let builtins = PolicySet::builtin_default();
    for (name, _) in PRESETS {
        let text = conf(&format!("preset-{name}.toml"));
        let set = PolicySet::from_toml(&text).unwrap_or_else(|e| panic!("preset-{name}.toml: {e}"));
        let mine = set.default_policy();
        assert_eq!(mine.name(), format!("my-{name}"));
        let theirs = builtins.policy(name).unwrap();
        assert_eq!(mine.rules, theirs.rules, "{name}");
        assert_eq!(mine.response_headers, theirs.response_headers, "{name}");
        assert_eq!(mine.audit, theirs.audit, "{name}");
    }
}

#[test]
fn conf_example_compiles() {
    let text = conf("example.toml");
    let set = PolicySet::from_toml(&text).unwrap_or_else(|e| panic!("example.toml: {e}"));
    assert!(set.policy_names().count() > PRESETS.len());
}

/// The complete TOML examples in docs/policy.md compile (blocks with `# ...` placeholders are
/// fragments and are skipped).
#[test]
fn docs_examples_compile() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md");
    let md = std::fs::read_to_string(&path).unwrap();
    let mut checked = 0;
    for block in md.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        if text.contains("# ...") {
            continue;
        }
        PolicySet::from_toml(text).unwrap_or_else(|e| panic!("docs example: {e}\n{text}"));
        checked += 1;
    }
    assert!(checked >= 1);
}
