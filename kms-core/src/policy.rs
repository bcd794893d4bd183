//! RAM-style policies: `{"Version":"1","Statement":[{"Effect","Action","Resource","Condition"}]}`.
//!
//! A request is allowed when some statement allows it and none denies it (explicit Deny wins; no
//! match is a deny). `Action` patterns are `kms:<Api>` with `*`/`?` wildcards, case-insensitive;
//! `Resource` patterns are ARNs with wildcards. Conditions: StringEquals, StringNotEquals,
//! StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike, StringNotLike, Bool,
//! DateLessThan(Equals), DateGreaterThan(Equals), IpAddress, NotIpAddress; keys `acs:CurrentTime`,
//! `acs:SourceIp`, `acs:SecureTransport`, `kms:tag/<TagKey>`. Operators AND together, as do keys
//! inside an operator; the values of one key OR. A key absent from the request makes positive
//! operators false and negated ones true.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::clock::{parse_iso, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A wildcard pattern: `*` any run, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    ignore_case: bool,
}

impl Pattern {
    fn new(text: &str, ignore_case: bool) -> Self {
        Pattern { text: if ignore_case { text.to_ascii_lowercase() } else { text.to_string() }, ignore_case }
    }

    pub fn matches(&self, s: &str) -> bool {
        if self.ignore_case {
            glob(self.text.as_bytes(), s.to_ascii_lowercase().as_bytes())
        } else {
            glob(self.text.as_bytes(), s.as_bytes())
        }
    }
}

/// Iterative wildcard match with backtracking to the last `*` (linear for these short strings).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    Bool,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    IpAddress,
    NotIpAddress,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "StringEquals" => Op::StringEquals,
            "StringNotEquals" => Op::StringNotEquals,
            "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Op::StringNotEqualsIgnoreCase,
            "StringLike" => Op::StringLike,
            "StringNotLike" => Op::StringNotLike,
            "Bool" => Op::Bool,
            "DateLessThan" => Op::DateLessThan,
            "DateLessThanEquals" => Op::DateLessThanEquals,
            "DateGreaterThan" => Op::DateGreaterThan,
            "DateGreaterThanEquals" => Op::DateGreaterThanEquals,
            "IpAddress" => Op::IpAddress,
            "NotIpAddress" => Op::NotIpAddress,
            _ => return None,
        })
    }

    fn negated(self) -> bool {
        matches!(self, Op::StringNotEquals | Op::StringNotEqualsIgnoreCase | Op::StringNotLike | Op::NotIpAddress)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    op: Op,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    actions: Vec<Pattern>,
    resources: Vec<Pattern>,
    conditions: Vec<Condition>,
}

/// A parsed, validated policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    name: String,
    statements: Vec<Statement>,
}

/// What one authorisation question is about.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    /// `kms:Encrypt`.
    pub action: &'a str,
    pub resource: &'a str,
    /// Tags of the resource (keys and secrets).
    pub tags: Option<&'a BTreeMap<String, String>>,
    pub source_ip: Option<IpAddr>,
    pub secure_transport: bool,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// An explicit Deny matched.
    Deny,
    /// Nothing matched: denied by default.
    NoMatch,
}

fn one_or_many(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err("list items must be strings".to_string()),
            })
            .collect(),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        _ => Err("expected a string or a list of strings".into()),
    }
}

impl Policy {
    /// Parses a document; errors say what is wrong and where.
    pub fn parse(name: &str, json: &str) -> Result<Policy, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Doc {
            version: Option<String>,
            statement: Value,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase", deny_unknown_fields)]
        struct St {
            #[allow(dead_code)]
            sid: Option<String>,
            effect: String,
            action: Value,
            #[serde(default)]
            resource: Option<Value>,
            #[serde(default)]
            condition: Option<BTreeMap<String, BTreeMap<String, Value>>>,
        }
        let err = |what: String| format!("policy {name}: {what}");
        let doc: Doc = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
        if doc.version.as_deref().is_some_and(|v| v != "1") {
            return Err(err("Version must be \"1\"".into()));
        }
        let raw: Vec<St> = match doc.statement {
            Value::Array(a) => a.into_iter().map(serde_json::from_value).collect::<Result<_, _>>(),
            v @ Value::Object(_) => serde_json::from_value(v).map(|s| vec![s]),
            _ => return Err(err("Statement must be a list".into())),
        }
        .map_err(|e| err(format!("statement: {e}")))?;
        let mut statements = Vec::new();
        for (i, s) in raw.into_iter().enumerate() {
            let at = |w: &str| err(format!("statement {}: {w}", i + 1));
            let effect = match s.effect.as_str() {
                "Allow" => Effect::Allow,
                "Deny" => Effect::Deny,
                other => return Err(at(&format!("Effect {other:?} is not Allow or Deny"))),
            };
            let actions = one_or_many(&s.action).map_err(|e| at(&format!("Action: {e}")))?;
            for a in &actions {
                if !a.to_ascii_lowercase().starts_with("kms:") {
                    return Err(at(&format!("Action {a:?} must start with kms:")));
                }
            }
            let resources = match &s.resource {
                Some(r) => one_or_many(r).map_err(|e| at(&format!("Resource: {e}")))?,
                None => vec!["*".to_string()],
            };
            let mut conditions = Vec::new();
            for (op, keys) in s.condition.unwrap_or_default() {
                let op = Op::parse(&op).ok_or_else(|| at(&format!("unknown condition operator {op:?}")))?;
                for (key, v) in keys {
                    let values = one_or_many(&v).map_err(|e| at(&format!("condition {key}: {e}")))?;
                    if matches!(op, Op::IpAddress | Op::NotIpAddress) {
                        for v in &values {
                            parse_cidr(v).ok_or_else(|| at(&format!("{v:?} is not an IP address or CIDR block")))?;
                        }
                    }
                    if matches!(
                        op,
                        Op::DateLessThan | Op::DateLessThanEquals | Op::DateGreaterThan | Op::DateGreaterThanEquals
                    ) {
                        for v in &values {
                            parse_iso(v).ok_or_else(|| at(&format!("{v:?} is not an ISO-8601 time")))?;
                        }
                    }
                    conditions.push(Condition { op, key, values });
                }
            }
            statements.push(Statement {
                effect,
                actions: actions.iter().map(|a| Pattern::new(a, true)).collect(),
                resources: resources.iter().map(|r| Pattern::new(r, false)).collect(),
                conditions,
            });
        }
        Ok(Policy { name: name.to_string(), statements })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }
}

/// The decision of a set of policies (explicit Deny beats Allow; no match is a deny).
pub fn evaluate(policies: &[Policy], ctx: &RequestContext<'_>) -> Decision {
    let mut allowed = false;
    for st in policies.iter().flat_map(|p| &p.statements) {
        if !st.actions.iter().any(|a| a.matches(ctx.action)) || !st.resources.iter().any(|r| r.matches(ctx.resource)) {
            continue;
        }
        if !st.conditions.iter().all(|c| condition_holds(c, ctx)) {
            continue;
        }
        match st.effect {
            Effect::Deny => return Decision::Deny,
            Effect::Allow => allowed = true,
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::NoMatch
    }
}

fn condition_holds(c: &Condition, ctx: &RequestContext<'_>) -> bool {
    let value: Option<String> = match c.key.as_str() {
        k if k.eq_ignore_ascii_case("acs:CurrentTime") => Some(crate::clock::format_iso(ctx.now)),
        k if k.eq_ignore_ascii_case("acs:SourceIp") => ctx.source_ip.map(|ip| ip.to_string()),
        k if k.eq_ignore_ascii_case("acs:SecureTransport") => Some(ctx.secure_transport.to_string()),
        // `get` rather than slicing: a condition key may hold multi-byte characters anywhere.
        k if k.len() > 8 && k.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("kms:tag/")) => {
            ctx.tags.and_then(|t| t.get(&k[8..]).cloned())
        }
        _ => None,
    };
    let Some(v) = value else {
        return c.op.negated();
    };
    let any = |f: &dyn Fn(&str) -> bool| c.values.iter().any(|x| f(x));
    match c.op {
        Op::StringEquals => any(&|x| x == v),
        Op::StringNotEquals => !any(&|x| x == v),
        Op::StringEqualsIgnoreCase => any(&|x| x.eq_ignore_ascii_case(&v)),
        Op::StringNotEqualsIgnoreCase => !any(&|x| x.eq_ignore_ascii_case(&v)),
        Op::StringLike => any(&|x| Pattern::new(x, false).matches(&v)),
        Op::StringNotLike => !any(&|x| Pattern::new(x, false).matches(&v)),
        Op::Bool => any(&|x| x.eq_ignore_ascii_case(&v)),
        Op::DateLessThan => any(&|x| parse_iso(x).is_some_and(|t| ctx.now < t)),
        Op::DateLessThanEquals => any(&|x| parse_iso(x).is_some_and(|t| ctx.now <= t)),
        Op::DateGreaterThan => any(&|x| parse_iso(x).is_some_and(|t| ctx.now > t)),
        Op::DateGreaterThanEquals => any(&|x| parse_iso(x).is_some_and(|t| ctx.now >= t)),
        Op::IpAddress | Op::NotIpAddress => {
            let ip: IpAddr = match v.parse() {
                Ok(ip) => ip,
                Err(_) => return c.op.negated(),
            };
            let inside = any(&|x| parse_cidr(x).is_some_and(|(net, bits)| in_cidr(ip, net, bits)));
            if c.op == Op::IpAddress {
                inside
            } else {
                !inside
            }
        }
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, b.parse::<u8>().ok()?),
        None => (s, if s.contains(':') { 128 } else { 32 }),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|a4| in_cidr(IpAddr::V4(a4), net, bits)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_key_with_multibyte_characters_is_evaluated_not_a_panic() {
        // Found by fuzz/policy_document: the `kms:tag/` prefix test sliced at byte 8.
        let doc = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*",
            "Condition":{"StringEquals":{"a\u00e9\u00e9\u00e9\u00e9:tag/x":"v"}}}]}"#;
        let p = Policy::parse("p", doc).unwrap();
        let ctx = RequestContext {
            action: "kms:Encrypt",
            resource: "acs:kms:cn-hangzhou:1:key/key-a",
            tags: None,
            source_ip: None,
            secure_transport: false,
            now: 0,
        };
        assert_eq!(evaluate(&[p], &ctx), Decision::NoMatch);
    }

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("kms:*", "kms:encrypt", true),
            ("kms:list*", "kms:listkeys", true),
            ("kms:list*", "kms:describekey", false),
            ("kms:reencrypt*", "kms:reencryptfrom", true),
            ("acs:kms:*:*:key/*", "acs:kms:cn-hangzhou:1:key/key-a", true),
            ("acs:kms:*:*:key/*", "acs:kms:cn-hangzhou:1:alias/a", false),
            ("key-??", "key-ab", true),
            ("key-??", "key-abc", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (n, b) = parse_cidr("10.1.0.0/16").unwrap();
        assert!(in_cidr(ip("10.1.200.3"), n, b));
        assert!(!in_cidr(ip("10.2.0.1"), n, b));
        assert!(in_cidr(ip("::ffff:10.1.0.9"), n, b));
        let (n, b) = parse_cidr("::1").unwrap();
        assert!(in_cidr(ip("::1"), n, b));
        assert!(parse_cidr("10.0.0.0/33").is_none() && parse_cidr("nope").is_none());
    }

    #[test]
    fn bad_documents_are_refused_with_a_reason() {
        for (doc, want) in [
            (r#"{"Version":"2","Statement":[]}"#, "Version"),
            (r#"{"Version":"1","Statement":[{"Effect":"Maybe","Action":"kms:*"}]}"#, "Effect"),
            (r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ecs:*"}]}"#, "kms:"),
            (
                r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Condition":{"Sometimes":{"a":"b"}}}]}"#,
                "operator",
            ),
            (
                r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Condition":{"IpAddress":{"acs:SourceIp":"x"}}}]}"#,
                "IP",
            ),
            (r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Extra":1}]}"#, "Extra"),
        ] {
            let e = Policy::parse("p", doc).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
