//! The `--Name value` words of the generic `<Action>` form, and the names the action does not
//! read: each is warned about (with the names it was probably meant to be) before the request
//! goes out, since the KMS ignores a parameter it does not know – a misspelt optional one would
//! otherwise vanish without a word.

use kms_core::api::{Action, ParameterKind};

use crate::action_name::distance;

/// `--Name value` or `--Name=value` pairs.
pub fn parse(words: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let name = w.strip_prefix("--").ok_or_else(|| format!("expected --Name value, got {w:?}"))?;
        match name.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                out.push((name.to_string(), v.clone()));
            }
        }
    }
    Ok(out)
}

/// The generic form's words split into kmsctl's own options (`--output table`, `--endpoint …`:
/// lowercase names from `globals`, which clap does not see after an action name) and the
/// action's `--Param value` words. Only words in a name's place count: a parameter's value that
/// happens to read `--output` stays a value.
pub fn split_own_options(words: &[String], globals: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut own, mut params) = (Vec::new(), Vec::new());
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let name = w.strip_prefix("--").map(|n| n.split('=').next().unwrap_or(n));
        let target = if name.is_some_and(|n| globals.iter().any(|g| g == n)) { &mut own } else { &mut params };
        target.push(w.clone());
        if w.starts_with("--") && !w.contains('=') && w != "--help" {
            if let Some(v) = it.next() {
                target.push(v.clone());
            }
        }
    }
    (own, params)
}

/// `--help` or `-h` where a parameter name would be (not as some parameter's value).
pub fn asks_for_help(words: &[String]) -> bool {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "--help" || w == "-h" {
            return true;
        }
        if w.starts_with("--") && !w.contains('=') {
            it.next();
        }
    }
    false
}

/// Parameters every request may carry (the SDKs send them; the KMS reads its own region).
const COMMON: &[&str] = &["RegionId"];

/// A warning for each parameter `action` does not read.
pub fn unknown(action: Action, params: &[(String, String)]) -> Vec<String> {
    let known = action.parameters();
    params
        .iter()
        .filter(|(name, _)| {
            let (head, indexed) = match name.split_once('.') {
                Some((head, _)) => (head, true),
                None => (name.as_str(), false),
            };
            !COMMON.contains(&head)
                && !known.iter().any(|p| {
                    p.name == head
                        // `Tag.1.Key`, `ResourceId.2`; ExtendedConfig's dotted form (WIRE.md).
                        && (!indexed || p.kind == ParameterKind::List || p.name == "ExtendedConfig")
                })
        })
        .map(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            let mut near: Vec<(usize, &str)> = known
                .iter()
                .map(|p| (distance(&lower, &p.name.to_ascii_lowercase()), p.name))
                .filter(|(d, n)| *d <= 2.max(n.len() / 4))
                .collect();
            near.sort();
            let hint = match near.first() {
                Some((_, n)) => format!("; did you mean --{n}?"),
                None => String::new(),
            };
            format!(
                "{action} has no parameter --{name}{hint} (sent anyway; the KMS ignores it – kmsctl {action} --help lists them)"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "x".to_string())).collect()
    }

    #[test]
    fn words_become_pairs() {
        let words: Vec<String> = ["--KeyId", "k", "--Plaintext=aGk="].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse(&words).unwrap(), pairs_kv(&[("KeyId", "k"), ("Plaintext", "aGk=")]));
        assert!(parse(&["KeyId".to_string()]).unwrap_err().contains("expected --Name value"));
        assert!(parse(&["--KeyId".to_string()]).unwrap_err().contains("needs a value"));
    }

    fn pairs_kv(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn own_options_are_told_from_parameters_by_place() {
        let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let globals = w(&["output", "endpoint"]);
        let (own, params) = split_own_options(
            &w(&["--KeyId", "k", "--output", "table", "--Description", "--output", "--endpoint=http://x"]),
            &globals,
        );
        assert_eq!(own, w(&["--output", "table", "--endpoint=http://x"]));
        assert_eq!(params, w(&["--KeyId", "k", "--Description", "--output"]));
    }

    #[test]
    fn help_is_asked_for_only_where_a_name_goes() {
        let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(asks_for_help(&w(&["--help"])));
        assert!(asks_for_help(&w(&["--KeyId", "k", "-h"])));
        assert!(asks_for_help(&w(&["--KeyId=k", "--help"])));
        assert!(!asks_for_help(&w(&["--Description", "--help"])), "a value that happens to read --help");
    }

    #[test]
    fn misspelt_names_are_named_with_a_suggestion_and_real_ones_pass() {
        assert!(unknown(Action::Encrypt, &pairs(&["KeyId", "Plaintext", "EncryptionContext", "RegionId"])).is_empty());
        let w = unknown(Action::Encrypt, &pairs(&["KeyId", "Plantext", "EncryptionContex"]));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("--Plantext; did you mean --Plaintext?"), "{w:?}");
        assert!(w[1].contains("did you mean --EncryptionContext?"), "{w:?}");
        let none = unknown(Action::Encrypt, &pairs(&["Frobnicate"]));
        assert!(none[0].contains("no parameter --Frobnicate (sent anyway"), "{none:?}");
    }

    #[test]
    fn indexed_and_dotted_forms_belong_to_their_list() {
        let ok = pairs(&["RegionId", "ResourceType", "ResourceId.1", "ResourceId.2", "Tag.1.Key", "Tag.1.Value"]);
        assert!(unknown(Action::TagResources, &ok).is_empty());
        assert!(unknown(Action::UpdateSecret, &pairs(&["SecretName", "ExtendedConfig.CustomData.a"])).is_empty());
        assert_eq!(unknown(Action::Encrypt, &pairs(&["KeyId.1"])).len(), 1, "KeyId is not a list");
    }
}
