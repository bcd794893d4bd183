//! The generic `<Action>` form's action name, checked against the action table before anything
//! is sent: a mistyped name is a usage error with the names it was probably meant to be.

use kms_core::api::{Action, ACTIONS};

/// The action `name` names exactly, or an error suggesting the closest ones.
pub fn parse(name: &str) -> Result<Action, String> {
    if let Some(a) = Action::parse(name) {
        return Ok(a);
    }
    let lower = name.to_ascii_lowercase();
    let mut near: Vec<(usize, &str)> = ACTIONS
        .iter()
        .map(|s| {
            let d =
                if s.name.to_ascii_lowercase() == lower { 0 } else { distance(&lower, &s.name.to_ascii_lowercase()) };
            (d, s.name)
        })
        .filter(|(d, n)| *d <= 3.max(n.len() / 4))
        .collect();
    near.sort();
    let names: Vec<&str> = near.iter().take(3).map(|(_, n)| *n).collect();
    Err(match names.as_slice() {
        [] => format!("unknown action {name:?} (names are case-sensitive, as in the API: ListKeys, CreateKey, …)"),
        _ => format!("unknown action {name:?}; did you mean {}?", names.join(", ")),
    })
}

/// Edit distance (insertions, deletions, substitutions) between two ASCII strings.
pub fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_pass_and_near_ones_are_suggested() {
        assert_eq!(parse("ListKeys").unwrap(), Action::ListKeys);
        assert!(parse("listkeys").unwrap_err().contains("did you mean ListKeys"));
        assert!(parse("DescribeKy").unwrap_err().contains("DescribeKey"));
        assert!(parse("CreateSecert").unwrap_err().contains("CreateSecret"));
        let none = parse("Frobnicate").unwrap_err();
        assert!(none.contains("unknown action \"Frobnicate\"") && !none.contains("did you mean"), "{none}");
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
