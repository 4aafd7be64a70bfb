//! The edits to a CNI configuration's text: add metaguard at the end of a list's `plugins`, take
//! it out again, and turn a single-plugin file into a list.
//!
//! Edits are splices (see [`crate::jsonspan`]): bytes outside metaguard's own entry are never
//! rewritten. Decisions ("is metaguard already there, with this configuration?") compare parsed
//! values, so key order or formatting never makes a second run write anything.

use crate::jsonspan::{self, SpanError};
use serde_json::{Map, Value};
use std::ops::Range;

/// The plugin's `type`, which is also the name of its binary in the CNI bin directory.
pub const PLUGIN_TYPE: &str = "metaguard";

/// The capability that makes containerd pass pod annotations in `runtimeConfig`.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// CNI versions metaguard answers (VERSION). A conflist must say one of these: chaining with
/// `prevResult` does not exist before 0.3.0.
pub const SUPPORTED_CNI_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Keys the plugin accepts in its entry (the agreed configuration interface), besides `type`.
/// Checked here because an unknown key makes every pod's ADD fail on the node; better to refuse
/// at install time.
pub const PLUGIN_KEYS: &[&str] = &[
    "proxy",
    "endpoints",
    "block",
    "hostGuard",
    "stateDir",
    "logFile",
    "logLevel",
    "capabilities",
    "args",
];

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Span(#[from] SpanError),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ChainError {
    ChainError::Invalid(msg.into())
}

/// The metaguard entry to put in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Full entry, `type` included.
    value: Value,
}

impl Entry {
    /// Builds the entry from the user's configuration (a JSON object, possibly empty). Adds
    /// `"type": "metaguard"` and asks for the pod-annotations capability unless the user said
    /// something about it.
    pub fn from_config(config: Option<&str>) -> Result<Entry, ChainError> {
        let mut obj = match config {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(invalid("--config must be a JSON object")),
                Err(e) => return Err(ChainError::Json(format!("--config: {e}"))),
            },
        };
        match obj.remove("type") {
            None => {}
            Some(Value::String(t)) if t == PLUGIN_TYPE => {}
            Some(other) => {
                return Err(invalid(format!(
                    "--config: \"type\" must be \"{PLUGIN_TYPE}\", not {other}"
                )))
            }
        }
        for k in obj.keys() {
            if !PLUGIN_KEYS.contains(&k.as_str()) {
                return Err(invalid(format!(
                    "--config: unknown key \"{k}\" (the plugin accepts: type, {})",
                    PLUGIN_KEYS.join(", ")
                )));
            }
        }
        let caps = obj
            .entry("capabilities")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(caps) = caps else {
            return Err(invalid("--config: \"capabilities\" must be an object"));
        };
        caps.entry(POD_ANNOTATIONS_CAPABILITY)
            .or_insert(Value::Bool(true));
        for (k, v) in caps.iter() {
            if k != POD_ANNOTATIONS_CAPABILITY || !v.is_boolean() {
                return Err(invalid(format!(
                    "--config: capability \"{k}\": the plugin supports only \"{POD_ANNOTATIONS_CAPABILITY}\" (true or false)"
                )));
            }
        }
        obj.insert("type".into(), Value::String(PLUGIN_TYPE.into()));
        Ok(Entry {
            value: Value::Object(obj),
        })
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The entry as text, `type` first, continuation lines prefixed with `indent`, members one
    /// `step` deeper.
    fn render(&self, indent: &str, step: &str) -> String {
        let Value::Object(m) = &self.value else {
            return String::new();
        };
        let inner = format!("{indent}{step}");
        let mut parts = vec![format!("{inner}\"type\": \"{PLUGIN_TYPE}\"")];
        for (k, v) in m.iter().filter(|(k, _)| k.as_str() != "type") {
            let key = Value::String(k.clone()).to_string();
            let val = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
            parts.push(format!("{inner}{key}: {}", reindent(&val, &inner, step)));
        }
        format!("{{\n{}\n{indent}}}", parts.join(",\n"))
    }
}

/// Re-indents serde_json's pretty output (two spaces per level) to `indent` plus `step` per level.
fn reindent(pretty: &str, indent: &str, step: &str) -> String {
    let mut out = String::with_capacity(pretty.len());
    for (i, line) in pretty.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            let trimmed = line.trim_start_matches(' ');
            let levels = (line.len() - trimmed.len()) / 2;
            out.push_str(indent);
            for _ in 0..levels {
                out.push_str(step);
            }
            out.push_str(trimmed);
        } else {
            out.push_str(line);
        }
    }
    out
}

fn parse(text: &str) -> Result<Value, ChainError> {
    serde_json::from_str(text).map_err(|e| ChainError::Json(e.to_string()))
}

fn check_version(v: Option<&Value>) -> Result<String, ChainError> {
    match v {
        Some(Value::String(s)) if SUPPORTED_CNI_VERSIONS.contains(&s.as_str()) => Ok(s.clone()),
        Some(Value::String(s)) => Err(invalid(format!(
            "cniVersion \"{s}\" cannot chain metaguard (it supports {})",
            SUPPORTED_CNI_VERSIONS.join(", ")
        ))),
        Some(_) => Err(invalid("cniVersion is not a string")),
        None => Err(invalid("no cniVersion")),
    }
}

/// The plugin refuses networks whose name does not follow CNI's rule (the name is part of every
/// pod record); chaining it into such a network would make every pod's ADD fail.
fn check_network_name(name: &str) -> Result<(), ChainError> {
    if metaguard_common::ids::valid_cni_name(name) {
        Ok(())
    } else {
        Err(invalid(format!(
            "network name {name:?} does not match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$; the metaguard plugin would refuse every pod"
        )))
    }
}

fn is_metaguard(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// A parsed configuration list: its plugins with their spans in the text.
#[derive(Debug)]
pub struct ListView {
    pub cni_version: String,
    pub name: String,
    pub plugins: Vec<(Range<usize>, Value)>,
}

impl ListView {
    /// Parses and checks a `.conflist` the way containerd would need it.
    pub fn parse(text: &str) -> Result<ListView, ChainError> {
        let doc = parse(text)?;
        let top = jsonspan::top_object(text)?;
        let cni_version = check_version(doc.get("cniVersion"))?;
        let name = match doc.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(invalid("no \"name\"")),
        };
        let Some(span) = top.get("plugins")? else {
            return Err(invalid("no \"plugins\" list"));
        };
        if !text[span.clone()].starts_with('[') {
            return Err(invalid("\"plugins\" is not a list"));
        }
        let spans = jsonspan::array_elements(text, span)?;
        let mut plugins = Vec::with_capacity(spans.len());
        for s in spans {
            let v = parse(&text[s.clone()])?;
            if !v.is_object() || v.get("type").and_then(Value::as_str).is_none() {
                return Err(invalid(format!(
                    "plugin {} of \"plugins\" has no \"type\"",
                    plugins.len() + 1
                )));
            }
            plugins.push((s, v));
        }
        if plugins.is_empty() {
            return Err(invalid(
                "\"plugins\" is empty (containerd refuses such a list)",
            ));
        }
        Ok(ListView {
            cni_version,
            name,
            plugins,
        })
    }

    /// Types of the plugins, in order.
    pub fn types(&self) -> Vec<String> {
        self.plugins
            .iter()
            .map(|(_, v)| {
                v.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    /// Whether metaguard is in the chain after at least one other plugin (it needs a prevResult).
    pub fn has_metaguard(&self) -> bool {
        self.plugins.iter().skip(1).any(|(_, v)| is_metaguard(v))
    }

    /// How many entries of type metaguard the list has, wherever they are.
    pub fn metaguard_count(&self) -> usize {
        self.plugins.iter().filter(|(_, v)| is_metaguard(v)).count()
    }

    /// Metaguard present once, last, with exactly `entry`'s configuration.
    pub fn is_canonical(&self, entry: &Entry) -> bool {
        self.metaguard_count() == 1
            && self.plugins.len() >= 2
            && self.plugins.last().is_some_and(|(_, v)| v == entry.value())
    }
}

/// Cuts plugin `i` out of the list text, with the comma that separates it from a neighbour.
fn cut_plugin(text: &str, view: &ListView, i: usize) -> String {
    let spans: Vec<&Range<usize>> = view.plugins.iter().map(|(s, _)| s).collect();
    let cut = if i > 0 {
        spans[i - 1].end..spans[i].end
    } else if spans.len() > 1 {
        spans[0].start..spans[1].start
    } else {
        spans[0].clone()
    };
    format!("{}{}", &text[..cut.start], &text[cut.end..])
}

/// Removes every metaguard entry from a list's text. Returns the text unchanged when there is none.
pub fn strip_from_list(text: &str) -> Result<String, ChainError> {
    let mut text = text.to_string();
    loop {
        let view = ListView::parse(&text)?;
        let Some(i) = view.plugins.iter().rposition(|(_, v)| is_metaguard(v)) else {
            return Ok(text);
        };
        if view.plugins.len() == 1 {
            return Err(invalid("metaguard is the only plugin of the list"));
        }
        text = cut_plugin(&text, &view, i);
    }
}

/// The list text with metaguard as its last plugin configured as `entry`, or `None` when it
/// already is exactly that (nothing to write).
pub fn add_to_list(text: &str, entry: &Entry) -> Result<Option<String>, ChainError> {
    let view = ListView::parse(text)?;
    if view.is_canonical(entry) {
        return Ok(None);
    }
    check_network_name(&view.name)?;
    if view.plugins.iter().all(|(_, v)| is_metaguard(v)) {
        return Err(invalid(
            "the list holds no plugin other than metaguard to chain after",
        ));
    }
    let base = strip_from_list(text)?;
    let view = ListView::parse(&base)?;
    let Some((last, _)) = view.plugins.last() else {
        return Err(invalid("\"plugins\" is empty"));
    };
    let first = &view.plugins[0].0;
    let (sep, indent) = match jsonspan::line_indent(&base, first.start) {
        Some(ind) => (format!(",\n{ind}"), ind.to_string()),
        // Plugins written on one line: stay on one line.
        None => (", ".to_string(), String::new()),
    };
    let rendered = if indent.is_empty() && !sep.contains('\n') {
        serde_json::to_string(entry.value()).map_err(|e| ChainError::Json(e.to_string()))?
    } else {
        let step = if indent.contains('\t') { "\t" } else { "  " };
        entry.render(&indent, step)
    };
    let out = format!("{}{sep}{rendered}{}", &base[..last.end], &base[last.end..]);
    // The result must say what we meant; a scanner mistake must never reach the disk.
    let check = ListView::parse(&out)?;
    if !check.is_canonical(entry) {
        return Err(invalid(
            "internal error: the edited list does not end with the metaguard entry",
        ));
    }
    Ok(Some(out))
}

/// A parsed single-plugin configuration (`.conf` / `.json`).
#[derive(Debug)]
pub struct SingleView {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    value: Value,
}

impl SingleView {
    pub fn parse(text: &str) -> Result<SingleView, ChainError> {
        let value = parse(text)?;
        jsonspan::top_object(text)?;
        let plugin_type = match value.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ if value.get("plugins").is_some() => {
                return Err(invalid(
                    "a list in a single-plugin file (containerd loads .conf and .json files as one plugin and fails on this one; name it .conflist)",
                ))
            }
            _ => return Err(invalid("no \"type\"")),
        };
        if plugin_type == PLUGIN_TYPE {
            return Err(invalid(
                "metaguard cannot be the only plugin: it chains after the main CNI",
            ));
        }
        let cni_version = check_version(value.get("cniVersion"))?;
        let name = match value.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(invalid("no \"name\"")),
        };
        Ok(SingleView {
            cni_version,
            name,
            plugin_type,
            value,
        })
    }

    /// The list libcni builds from this file (`ConfListFromConf`): same version and name, the
    /// whole file as the only plugin. Used to tell whether a list we generated was changed.
    pub fn as_list_value(&self) -> Value {
        serde_json::json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": [self.value.clone()],
        })
    }
}

/// Turns a single-plugin file's text into a list holding that plugin (bytes as they were, only
/// re-indented) followed by metaguard.
pub fn convert_single(text: &str, entry: &Entry) -> Result<String, ChainError> {
    let view = SingleView::parse(text)?;
    check_network_name(&view.name)?;
    let top = jsonspan::top_object(text)?;
    let raw = |k: &str| -> Result<String, ChainError> {
        top.get(k)?
            .map(|s| text[s].to_string())
            .ok_or_else(|| invalid(format!("no \"{k}\"")))
    };
    let conf = text[top.span.clone()].replace('\n', "\n    ");
    let out = format!(
        "{{\n  \"cniVersion\": {},\n  \"name\": {},\n  \"plugins\": [\n    {conf},\n    {}\n  ]\n}}\n",
        raw("cniVersion")?,
        raw("name")?,
        entry.render("    ", "  "),
    );
    let check = ListView::parse(&out)?;
    let stripped = parse(&strip_from_list(&out)?)?;
    if !check.is_canonical(entry) || stripped != view.as_list_value() {
        return Err(invalid(
            "internal error: the generated list does not match the original file",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{
  "cniVersion": "0.3.1",
  "name": "k8s-pod-network",
  "plugins": [
    {
      "type": "calico",
      "ipam": {"type": "calico-ipam"}
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
"#;

    fn entry() -> Entry {
        Entry::from_config(Some(
            r#"{"hostGuard": true, "proxy": {"ipv4": "10.0.0.1"}}"#,
        ))
        .unwrap()
    }

    #[test]
    fn entry_defaults() {
        let e = Entry::from_config(None).unwrap();
        assert_eq!(
            e.value(),
            &serde_json::json!({"type": "metaguard", "capabilities": {POD_ANNOTATIONS_CAPABILITY: true}})
        );
        let e = Entry::from_config(Some(
            r#"{"capabilities": {"io.kubernetes.cri.pod-annotations": false}}"#,
        ))
        .unwrap();
        assert_eq!(
            e.value()["capabilities"][POD_ANNOTATIONS_CAPABILITY],
            Value::Bool(false)
        );
        assert!(Entry::from_config(Some(r#"{"type": "bridge"}"#)).is_err());
        assert!(Entry::from_config(Some(r#"{"hostgaurd": true}"#))
            .unwrap_err()
            .to_string()
            .contains("hostgaurd"));
        assert!(Entry::from_config(Some("[1]")).is_err());
        assert!(Entry::from_config(Some("{")).is_err());
        assert!(Entry::from_config(Some(r#"{"capabilities": 1}"#)).is_err());
        assert!(Entry::from_config(Some(r#"{"capabilities": {"portMappings": true}}"#)).is_err());
    }

    #[test]
    fn add_appends_last_and_keeps_the_rest() {
        let out = add_to_list(LIST, &entry()).unwrap().unwrap();
        let view = ListView::parse(&out).unwrap();
        assert_eq!(view.types(), ["calico", "portmap", "metaguard"]);
        assert_eq!(view.cni_version, "0.3.1");
        // Everything before the insertion point is byte-identical.
        let cut = LIST.rfind('}').unwrap();
        let last_plugin_end = LIST[..cut].rfind('}').unwrap() + 1;
        assert_eq!(&out[..last_plugin_end], &LIST[..last_plugin_end]);
        assert!(out.ends_with("\n  ]\n}\n"), "{out}");
        assert!(
            out.contains("\n    {\n      \"type\": \"metaguard\",\n"),
            "{out}"
        );
        // Twice: nothing to do.
        assert!(add_to_list(&out, &entry()).unwrap().is_none());
        // Strip gives back the original bytes.
        assert_eq!(strip_from_list(&out).unwrap(), LIST);
    }

    #[test]
    fn add_replaces_a_different_or_misplaced_entry() {
        let out = add_to_list(LIST, &entry()).unwrap().unwrap();
        let other = Entry::from_config(Some(r#"{"hostGuard": false}"#)).unwrap();
        let out2 = add_to_list(&out, &other).unwrap().unwrap();
        let v = ListView::parse(&out2).unwrap();
        assert!(v.is_canonical(&other));
        assert_eq!(v.types(), ["calico", "portmap", "metaguard"]);
        // metaguard in the middle (someone edited by hand): moved to the end, only one copy.
        let mid = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"metaguard"},{"type":"portmap"}]}"#;
        let out3 = add_to_list(mid, &entry()).unwrap().unwrap();
        assert_eq!(
            ListView::parse(&out3).unwrap().types(),
            ["bridge", "portmap", "metaguard"]
        );
        // One-line lists stay on one line.
        assert!(!out3.contains('\n'), "{out3}");
    }

    #[test]
    fn refuses_lists_it_cannot_chain() {
        let e = entry();
        for (text, what) in [
            (
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]}"#,
                "0.2.0",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"bridge"}]}"#,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "name",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "empty"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":{}}"#,
                "not a list",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"a":1}]}"#,
                "type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"metaguard"}]}"#,
                "other than metaguard",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}],"plugins":[]}"#,
                "duplicate",
            ),
            ("{\"cniVersion\":\"1.0.0\",", "JSON"),
            (
                r#"{"cniVersion":"1.0.0","name":"my net","plugins":[{"type":"bridge"}]}"#,
                "does not match",
            ),
        ] {
            let err = add_to_list(text, &e).unwrap_err().to_string();
            assert!(err.contains(what), "{text}: {err}");
        }
    }

    #[test]
    fn tabs_and_first_position() {
        let t = "{\n\t\"cniVersion\": \"0.4.0\",\n\t\"name\": \"n\",\n\t\"plugins\": [\n\t\t{\"type\": \"metaguard\"},\n\t\t{\"type\": \"flannel\"}\n\t]\n}";
        let out = add_to_list(t, &entry()).unwrap().unwrap();
        assert_eq!(
            ListView::parse(&out).unwrap().types(),
            ["flannel", "metaguard"]
        );
        assert!(
            out.contains("\n\t\t{\n\t\t\t\"type\": \"metaguard\""),
            "{out}"
        );
        let stripped = strip_from_list(&out).unwrap();
        assert_eq!(stripped, "{\n\t\"cniVersion\": \"0.4.0\",\n\t\"name\": \"n\",\n\t\"plugins\": [\n\t\t{\"type\": \"flannel\"}\n\t]\n}");
    }

    #[test]
    fn single_conf_becomes_a_list() {
        let conf = "{\n  \"cniVersion\": \"0.3.1\",\n  \"name\": \"mynet\",\n  \"type\": \"bridge\",\n  \"ipam\": {\"type\": \"host-local\"}\n}\n";
        let out = convert_single(conf, &entry()).unwrap();
        let v = ListView::parse(&out).unwrap();
        assert_eq!(v.types(), ["bridge", "metaguard"]);
        assert_eq!(v.cni_version, "0.3.1");
        assert_eq!(v.name, "mynet");
        assert!(add_to_list(&out, &entry()).unwrap().is_none());
        let bad = r#"{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"bridge"}]}"#;
        assert!(convert_single(bad, &entry())
            .unwrap_err()
            .to_string()
            .contains(".conflist"));
        assert!(convert_single(
            r#"{"cniVersion":"0.3.1","name":"n","type":"metaguard"}"#,
            &entry()
        )
        .is_err());
        assert!(convert_single(
            r#"{"cniVersion":"0.2.0","name":"n","type":"bridge"}"#,
            &entry()
        )
        .is_err());
    }
}
