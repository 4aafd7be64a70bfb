//! Near-miss names: which deny (or respond) rules name a path segment exactly while an allow
//! rule lets through the same name with trailing characters (`kube-env.`, `kube-envx`,
//! `token~`). The rule denies `.../attributes/kube-env`, but `/computeMetadata/v1/**` forwards
//! `.../attributes/kube-env.`, and whether a metadata server reads that as the secret is not ours
//! to bet on. `check-policy` turns each finding into a warning with a suggested fix
//! (docs/policy.md, "Near-miss names").
//!
//! How: for each segment of the denial's pattern that names something exactly (a literal or a
//! `{a,b}` alternative), the segment is replaced by a near miss of that name and the pattern is
//! intersected with every allow rule's pattern, segment by segment (`**` on either side
//! included). A path in the intersection is then run through the policy's rules in order (path
//! conditions only; a deny counts only if the path is its only condition): if an allow rule
//! decides it, the denial is exposed. The intersection finds candidates, the walk confirms them,
//! so a warning always comes with a path the policy really lets through.

use super::glob::{NameGlob, Seg};
use super::matcher::{PathMatch, Rule};
use super::{Action, Policy};

/// Endings tried after an exactly named segment (beside a symbolic "any longer name", which
/// finds allow globs such as `*.json`).
const SUFFIXES: [&str; 5] = [".", "x", "~", "-", "_"];

/// Most suggested globs for one finding (each exposed `{a,b}` segment multiplies them).
const MAX_SUGGESTIONS: usize = 8;

/// Most pattern intersections tried for one policy (each takes microseconds): a policy of
/// thousands of rules is checked in about a second at most, and load or reload never stalls on
/// it. Typical policies need a few hundred.
pub(super) const MAX_INTERSECTIONS: usize = 200_000;

/// An allow rule that lets a near miss through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AllowRef {
    pub id: String,
    /// Its index among the rules of its policy.
    pub index: usize,
    /// `None`: the policy being checked; else the fallback policy holding the rule.
    pub fallback: Option<String>,
}

/// A denial whose exactly named segments let near misses through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    /// The denial's index among its policy's rules.
    pub rule: usize,
    /// Indices of the exposed segments in the denial's pattern, ascending.
    pub segments: Vec<usize>,
    /// An allow rule that lets a near miss of the deepest exposed segment through.
    pub allow: AllowRef,
    /// A near-miss path that rule lets through (GET), for the warning.
    pub example: String,
}

/// The deny-side pattern: a compiled segment, or "this name followed by at least one character".
#[derive(Debug, Clone)]
enum Pat {
    Seg(Seg),
    NearMiss(String),
}

/// Every denial of `rules` (a policy's rules, consulted before those of `fallback` and its
/// chain) that near-miss names get past, and whether every denial was checked (`false`: the
/// policy was too large for [`MAX_INTERSECTIONS`]; the findings so far are returned).
pub(super) fn findings(rules: &[Rule], fallback: Option<&Policy>) -> (Vec<Finding>, bool) {
    let mut out = Vec::new();
    let mut budget = MAX_INTERSECTIONS;
    for (r, rule) in rules.iter().enumerate() {
        if matches!(rule.action, Action::Allow) {
            continue;
        }
        let segs = pattern(&rule.path);
        let mut segments = Vec::new();
        let mut last: Option<(AllowRef, String)> = None;
        for (i, seg) in segs.iter().enumerate() {
            let names: &[String] = match seg {
                Seg::Literal(l) if !l.is_empty() => std::slice::from_ref(l),
                Seg::OneOf(alts) => alts,
                _ => continue,
            };
            let mut hit = None;
            for n in names {
                if budget == 0 {
                    return (out, false);
                }
                hit = exposure(rules, fallback, &segs, i, n, rule.ignore_case, &mut budget);
                if hit.is_some() {
                    break;
                }
            }
            if let Some(hit) = hit {
                segments.push(i);
                // The deepest exposed segment (usually the leaf) makes the clearest example.
                last = Some(hit);
            }
        }
        if let Some((allow, example)) = last {
            out.push(Finding {
                rule: r,
                segments,
                allow,
                example,
            });
        }
    }
    (out, budget > 0)
}

/// The first near miss of `name` (segment `i` of `segs`) that an allow rule lets through.
fn exposure(
    rules: &[Rule],
    fallback: Option<&Policy>,
    segs: &[Seg],
    i: usize,
    name: &str,
    ci: bool,
    budget: &mut usize,
) -> Option<(AllowRef, String)> {
    let variants = SUFFIXES
        .iter()
        .map(|s| Pat::Seg(Seg::Literal(format!("{name}{s}"))))
        .chain(std::iter::once(Pat::NearMiss(name.to_owned())));
    for v in variants {
        let d: Vec<Pat> = segs
            .iter()
            .enumerate()
            .map(|(k, s)| {
                if k == i {
                    v.clone()
                } else {
                    Pat::Seg(s.clone())
                }
            })
            .collect();
        for (_, allow_rules) in chain(rules, fallback) {
            for a in allow_rules
                .iter()
                .filter(|a| matches!(a.action, Action::Allow))
            {
                if *budget == 0 {
                    return None;
                }
                *budget -= 1;
                let Some(path) = witness(&d, &pattern(&a.path), ci) else {
                    continue;
                };
                if let Some(hit) = let_through(rules, fallback, &path) {
                    return Some((hit, path));
                }
            }
        }
    }
    None
}

/// The policy's rules, then each fallback's, with the fallback's name.
fn chain<'a>(
    rules: &'a [Rule],
    fallback: Option<&'a Policy>,
) -> impl Iterator<Item = (Option<&'a str>, &'a [Rule])> {
    std::iter::once((None, rules)).chain(
        std::iter::successors(fallback, |p| p.fallback.as_deref())
            .map(|p| (Some(p.name.as_str()), p.rules.as_slice())),
    )
}

/// The allow rule that decides `GET path` when the request meets every rule's other conditions
/// an allow might need; `None` when a denial with no other condition, or no rule, decides it.
fn let_through(rules: &[Rule], fallback: Option<&Policy>, path: &str) -> Option<AllowRef> {
    for (policy, rules) in chain(rules, fallback) {
        for (index, r) in rules.iter().enumerate() {
            if !r.path_matches(path) {
                continue;
            }
            if matches!(r.action, Action::Allow) {
                return Some(AllowRef {
                    id: r.id.clone(),
                    index,
                    fallback: policy.map(str::to_owned),
                });
            }
            if r.path_is_only_condition() {
                return None;
            }
        }
    }
    None
}

/// A rule's path condition as glob segments. A `prefix` becomes its whole segments, its last
/// partial segment with `*`, then `**` (slightly broader than the prefix: fine for finding
/// overlaps, which the walk then confirms).
fn pattern(p: &PathMatch) -> Vec<Seg> {
    let parts = |s: &str| -> Vec<String> {
        s.strip_prefix('/')
            .unwrap_or(s)
            .split('/')
            .map(str::to_owned)
            .collect()
    };
    match p {
        PathMatch::Any => vec![Seg::Many],
        PathMatch::Glob(g) => g.segments().to_vec(),
        PathMatch::Exact(s) => parts(s).into_iter().map(Seg::Literal).collect(),
        PathMatch::Prefix(s) => {
            let mut v = parts(s);
            let last = v.pop().unwrap_or_default();
            let mut segs: Vec<Seg> = v.into_iter().map(Seg::Literal).collect();
            if !last.is_empty() {
                segs.push(Seg::Wild(NameGlob::new(&format!("{last}*"))));
            }
            segs.push(Seg::Many);
            segs
        }
    }
}

/// A path matched both by `d` (the denial, one segment a near miss; compared ignoring case when
/// `ci`, its literals are lower-case then) and by `a` (an allow rule's pattern), if there is one.
/// Where `a` names a segment, the path uses `a`'s spelling so that `a` itself matches it.
///
/// A depth-first search over (segment of `d`, segment of `a`), trying segments that line up
/// before letting a `**` take any, so the path found reads like a request (no `**` fill-in where
/// a literal fits).
fn witness(d: &[Pat], a: &[Seg], ci: bool) -> Option<String> {
    let (n, m) = (d.len(), a.len());
    let idx = |i: usize, j: usize| i * (m + 1) + j;
    // How each state (i, j) was reached: the previous state and the segment it added.
    type Step = (usize, usize, Option<String>);
    let mut from: Vec<Option<Step>> = vec![None; (n + 1) * (m + 1)];
    // (state, how it was reached), most preferred on top.
    let mut todo: Vec<((usize, usize), Step)> = vec![((0, 0), (0, 0, None))];
    while let Some(((i, j), step)) = todo.pop() {
        if from[idx(i, j)].is_some() {
            continue;
        }
        from[idx(i, j)] = Some(step);
        if (i, j) == (n, m) {
            return Some(rebuild(&from, idx, n, m));
        }
        let d_many = matches!(d.get(i), Some(Pat::Seg(Seg::Many)));
        let a_many = matches!(a.get(j), Some(Seg::Many));
        // In order of preference.
        let mut next: Vec<(usize, usize, Option<String>)> = Vec::new();
        if !d_many && !a_many {
            if let (Some(ds), Some(as_)) = (d.get(i), a.get(j)) {
                if let Some(s) = meet(ds, as_, ci) {
                    next.push((i + 1, j + 1, Some(s)));
                }
            }
        }
        if d_many {
            next.push((i + 1, j, None));
        }
        if a_many {
            next.push((i, j + 1, None));
        }
        if d_many {
            if let Some(s) = a.get(j).filter(|_| !a_many).and_then(a_sample) {
                next.push((i, j + 1, Some(s)));
            }
        }
        if a_many {
            if let Some(s) = d.get(i).filter(|_| !d_many).and_then(d_sample) {
                next.push((i + 1, j, Some(s)));
            }
        }
        for (ni, nj, seg) in next.into_iter().rev() {
            if from[idx(ni, nj)].is_none() {
                todo.push(((ni, nj), (i, j, seg)));
            }
        }
    }
    None
}

fn rebuild(
    from: &[Option<(usize, usize, Option<String>)>],
    idx: impl Fn(usize, usize) -> usize,
    n: usize,
    m: usize,
) -> String {
    let mut segs = Vec::new();
    let (mut i, mut j) = (n, m);
    while (i, j) != (0, 0) {
        let Some((pi, pj, seg)) = &from[idx(i, j)] else {
            break;
        };
        if let Some(s) = seg {
            segs.push(s.as_str());
        }
        (i, j) = (*pi, *pj);
    }
    segs.reverse();
    format!("/{}", segs.join("/"))
}

/// A segment `a`'s segment matches, when `**` on the other side takes it.
fn a_sample(a: &Seg) -> Option<String> {
    match a {
        Seg::Literal(l) => Some(l.clone()),
        Seg::Any => Some("x".into()),
        Seg::Wild(g) => Some(g.parts().join("x")),
        Seg::OneOf(alts) => alts.first().cloned(),
        Seg::Many => None,
    }
}

fn d_sample(d: &Pat) -> Option<String> {
    match d {
        Pat::Seg(s) => a_sample(s),
        Pat::NearMiss(n) => Some(format!("{n}.")),
    }
}

fn eq(x: &str, y: &str, ci: bool) -> bool {
    if ci {
        x.eq_ignore_ascii_case(y)
    } else {
        x == y
    }
}

fn lower(g: &NameGlob, ci: bool) -> NameGlob {
    if ci {
        NameGlob::new(&g.parts().join("*").to_ascii_lowercase())
    } else {
        g.clone()
    }
}

/// Whether the deny-side segment accepts the name `s` (spelled as the allow side has it).
fn d_accepts(d: &Pat, s: &str, ci: bool) -> bool {
    let folded = if ci {
        s.to_ascii_lowercase()
    } else {
        s.to_owned()
    };
    match d {
        Pat::Seg(Seg::Literal(l)) => eq(l, s, ci),
        Pat::Seg(Seg::Any) => !s.is_empty(),
        Pat::Seg(Seg::Wild(g)) => g.matches(&folded),
        Pat::Seg(Seg::OneOf(alts)) => alts.iter().any(|l| eq(l, s, ci)),
        Pat::Seg(Seg::Many) => true,
        Pat::NearMiss(n) => s.len() > n.len() && s.get(..n.len()).is_some_and(|h| eq(h, n, ci)),
    }
}

/// Whether the allow-side segment accepts the name `s` (spelled as the deny side has it).
fn a_accepts(a: &Seg, s: &str, ci: bool) -> bool {
    match a {
        Seg::Literal(l) => eq(l, s, ci),
        Seg::Any => !s.is_empty(),
        Seg::Wild(g) => lower(g, ci).matches(s),
        Seg::OneOf(alts) => alts.iter().any(|l| eq(l, s, ci)),
        Seg::Many => true,
    }
}

/// One segment both sides accept (neither is `**`), if any.
fn meet(d: &Pat, a: &Seg, ci: bool) -> Option<String> {
    match (d, a) {
        (_, Seg::Literal(l)) => d_accepts(d, l, ci).then(|| l.clone()),
        (_, Seg::OneOf(alts)) => alts.iter().find(|l| d_accepts(d, l, ci)).cloned(),
        (Pat::Seg(Seg::Literal(l)), _) => a_accepts(a, l, ci).then(|| l.clone()),
        (Pat::Seg(Seg::OneOf(alts)), _) => alts.iter().find(|l| a_accepts(a, l, ci)).cloned(),
        (Pat::Seg(Seg::Any), Seg::Wild(_)) => a_sample(a),
        (Pat::Seg(Seg::Any | Seg::Wild(_)) | Pat::NearMiss(_), Seg::Any) => d_sample(d),
        (Pat::Seg(Seg::Wild(g)), Seg::Wild(h)) => wild_meet(g.parts(), h.parts(), ci),
        (Pat::NearMiss(n), Seg::Wild(h)) => {
            // "n, then anything": a meet longer than `n` is a near miss; one equal to `n` is the
            // name itself (the literal suffix variants cover that allow glob).
            let w = wild_meet(&[n.clone(), String::new()], h.parts(), ci)?;
            (w.len() > n.len()).then_some(w)
        }
        (Pat::Seg(Seg::Many), _) | (_, Seg::Many) => None,
    }
}

/// A name two `*` patterns (split on `*`, at least one star each) both match, if any: their
/// prefixes and suffixes must agree; the longer of each, with every middle part between.
/// Where the allow side (`h`) spells a part, its spelling is kept.
fn wild_meet(g: &[String], h: &[String], ci: bool) -> Option<String> {
    let (g0, h0) = (g.first()?, h.first()?);
    let (gz, hz) = (g.last()?, h.last()?);
    let prefix = if g0.len() > h0.len() {
        eq(g0.get(..h0.len())?, h0, ci).then(|| format!("{h0}{}", &g0[h0.len()..]))?
    } else {
        eq(h0.get(..g0.len())?, g0, ci).then(|| h0.clone())?
    };
    let suffix = if gz.len() > hz.len() {
        let cut = gz.len() - hz.len();
        eq(gz.get(cut..)?, hz, ci).then(|| format!("{}{hz}", &gz[..cut]))?
    } else {
        eq(hz.get(hz.len() - gz.len()..)?, gz, ci).then(|| hz.clone())?
    };
    let middle = |p: &[String]| -> String {
        p.get(1..p.len().saturating_sub(1))
            .unwrap_or_default()
            .concat()
    };
    Some(format!("{prefix}{}{}{suffix}", middle(g), middle(h)))
}

/// The fix for a finding, as `glob` values: the rule's pattern (`kind` is `path`, `prefix` or
/// `glob`, `text` its value as written) with each exposed segment written as a segment prefix
/// (`name*`; an exposed `{a,b}` becomes one glob per name), and an exact path or a prefix made
/// a subtree (`/**`), the shape denials should have.
pub(super) fn suggestion(kind: &str, text: &str, segments: &[usize]) -> Vec<String> {
    let mut parts: Vec<String> = text
        .strip_prefix('/')
        .unwrap_or(text)
        .split('/')
        .map(str::to_owned)
        .collect();
    let mut tail = kind != "glob";
    if kind == "prefix" {
        if let Some(last) = parts.last_mut() {
            if !last.is_empty() {
                last.push('*');
            }
        }
    }
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    let n = parts.len();
    for (i, part) in parts.drain(..).enumerate() {
        let alternatives: Vec<String> = if !segments.contains(&i) {
            vec![part]
        } else if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            inner.split(',').map(|a| format!("{a}*")).collect()
        } else {
            vec![format!("{part}*")]
        };
        if i + 1 == n && tail && alternatives.iter().all(String::is_empty) {
            // `/a/b/` -> `/a/b/**`
            out.iter_mut().for_each(|p| p.push("**".into()));
            tail = false;
            continue;
        }
        out = out
            .into_iter()
            .flat_map(|p| {
                alternatives.iter().map(move |a| {
                    let mut p = p.clone();
                    p.push(a.clone());
                    p
                })
            })
            .take(MAX_SUGGESTIONS)
            .collect();
    }
    out.into_iter()
        .map(|mut p| {
            if tail {
                p.push("**".into());
            }
            format!("/{}", p.join("/"))
        })
        .collect()
}
