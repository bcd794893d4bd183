//! `kmsctl <Action> --help` and `kmsctl actions`: what an action reads and what it needs, from
//! the action table and the request types the server decodes (`kms_core::api`), so the help
//! cannot disagree with the server.

use kms_core::api::{Action, Parameter, ParameterKind, ACTIONS};
use unicode_width::UnicodeWidthStr;

/// The help of one action.
pub fn action(a: Action) -> String {
    let spec = a.spec();
    let params = a.parameters();
    let mut out = format!("{a}: an Alibaba Cloud KMS API action");
    out.push_str(if spec.mutating { " that changes state" } else { " that reads" });
    if !spec.permissions.is_empty() {
        out.push_str(&format!(" (RAM permission {})", spec.permissions.join(" and ")));
    }
    out.push_str("\n\nUsage: kmsctl ");
    out.push_str(a.name());
    for p in &params {
        let value = format!("{} <{}>", flag(p), p.kind.as_str());
        out.push(' ');
        out.push_str(&if p.required { value } else { format!("[{value}]") });
    }
    out.push('\n');
    if params.is_empty() {
        out.push_str("\nNo parameters.\n");
    } else {
        out.push_str("\nParameters:\n");
        let width = params.iter().map(|p| flag(p).width()).max().unwrap_or(0);
        for p in &params {
            out.push_str(&format!(
                "  {:<w$}  {:<7}  {:<8}  {}\n",
                flag(p),
                p.kind.as_str(),
                if p.required { "required" } else { "" },
                p.about,
                w = width
            ));
        }
        if params.iter().any(|p| p.kind == ParameterKind::List) {
            out.push_str(
                "\nLists are sent indexed: --ResourceId.1 a --ResourceId.2 b, --Tag.1.Key k --Tag.1.Value v.\n",
            );
        }
    }
    out.push_str(
        "\nValues are text: base64 where the API takes bytes, JSON where it takes objects. \
         Global options (--endpoint, --output json|table|text, credentials): kmsctl --help\n",
    );
    out
}

/// How a parameter is written on the command line: lists indexed (`--ResourceId.N`).
fn flag(p: &Parameter) -> String {
    match p.kind {
        ParameterKind::List => format!("--{}.N", p.name),
        _ => format!("--{}", p.name),
    }
}

/// Every action, one per line, with whether it changes state and its permissions.
pub fn all() -> String {
    let width = ACTIONS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in ACTIONS {
        out.push_str(&format!(
            "{:<width$}  {:<6}  {}\n",
            s.name,
            if s.mutating { "change" } else { "read" },
            s.permissions.join(", "),
        ));
    }
    out.push_str("\nkmsctl <Action> --help lists an action's parameters.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_help_lists_its_parameters_and_what_is_required() {
        let h = action(Action::Encrypt);
        assert!(h.starts_with("Encrypt: an Alibaba Cloud KMS API action that reads (RAM permission kms:Encrypt)"));
        assert!(h.contains("Usage: kmsctl Encrypt --KeyId <string> --Plaintext <string> [--EncryptionContext <string>] [--DryRun <boolean>]"), "{h}");
        let key_line = h.lines().find(|l| l.trim_start().starts_with("--KeyId")).unwrap();
        assert!(key_line.contains("required") && key_line.contains("alias"), "{key_line}");
        let ctx_line = h.lines().find(|l| l.trim_start().starts_with("--EncryptionContext")).unwrap();
        assert!(!ctx_line.contains("required"), "{ctx_line}");
        assert!(action(Action::DescribeRegions).contains("No parameters."));
        let tag = action(Action::TagResources);
        assert!(tag.contains("Lists are sent indexed") && tag.contains("--ResourceId.N <list>"), "{tag}");
    }

    #[test]
    fn the_list_names_every_action() {
        let all = all();
        for s in ACTIONS {
            assert!(all.lines().any(|l| l.starts_with(&format!("{} ", s.name))), "{}", s.name);
        }
    }
}
