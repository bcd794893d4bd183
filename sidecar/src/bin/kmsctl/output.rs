//! `--output json|table|text`: one renderer for every answer kmsctl prints.
//!
//! - `json`: the answer as the API gave it, pretty-printed (the default).
//! - `table`: for a list (the API's `Keys.Key[]`-style wrapper, or a list kmsctl built), one row
//!   per entry with a column per field and the paging fields below it; for anything else, a
//!   field/value table with nested objects flattened (`KeyMetadata.KeyId` shown as `KeyId`).
//! - `text`: the same rows tab-separated, without header or footer, for `cut`/`awk`.
//!
//! Every cell is made safe for a terminal: a description, alias or tag holding a newline, tab,
//! escape sequence or bidi override is shown escaped (`\n`, `\u{1b}`), so no stored string can
//! forge rows or rewrite the screen.

use serde_json::{Map, Value};
use unicode_width::UnicodeWidthStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Json,
    Table,
    Text,
}

/// `v` rendered as `format` asks, ending in a newline.
pub fn render(v: &Value, format: Output) -> String {
    match format {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Table => {
            let (header, rows, footer) = shape(v);
            let mut out = table(&header, &rows);
            if !footer.is_empty() {
                out.push_str(&footer.join("  "));
                out.push('\n');
            }
            out
        }
        Output::Text => {
            let (_, rows, _) = shape(v);
            rows.iter().map(|r| format!("{}\n", r.join("\t"))).collect()
        }
    }
}

/// Columns, rows (cells already made safe) and footer fields of an answer.
fn shape(v: &Value) -> (Vec<String>, Vec<Vec<String>>, Vec<String>) {
    if let Some((items, rest)) = list_in(v) {
        let mut columns: Vec<String> = Vec::new();
        for item in items {
            match item {
                Value::Object(m) => {
                    for k in m.keys() {
                        if !columns.contains(k) {
                            columns.push(k.clone());
                        }
                    }
                }
                _ if columns.is_empty() => columns.push("Value".into()),
                _ => {}
            }
        }
        columns.sort_by_key(|c| order(c));
        let rows = items
            .iter()
            .map(|item| match item {
                Value::Object(m) => columns.iter().map(|c| cell(m.get(c).unwrap_or(&Value::Null))).collect(),
                other => vec![cell(other)],
            })
            .collect();
        let footer = rest.iter().map(|(k, v)| format!("{}: {}", safe(k), cell(v))).collect();
        return (columns.iter().map(|c| safe(c)).collect(), rows, footer);
    }
    let mut fields = Vec::new();
    flatten("", unwrap_single(v), &mut fields);
    fields.sort_by_key(|(k, _)| order(k));
    let rows = fields.into_iter().map(|(k, v)| vec![safe(&k), cell(v)]).collect();
    (vec!["Field".into(), "Value".into()], rows, Vec::new())
}

/// Names that identify an entry come first, then what people scan for, then the rest in the
/// answer's (alphabetical) order: JSON objects carry no order of their own here.
const FIRST: &[&str] = &[
    "AliasName",
    "KeyId",
    "SecretName",
    "KeyVersionId",
    "VersionId",
    "Aliases",
    "KeySpec",
    "KeyUsage",
    "KeyState",
    "VersionStages",
    "ProtectionLevel",
    "CreationDate",
    "CreateTime",
    "NextRotationDate",
    "Description",
];

fn order(name: &str) -> (usize, String) {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    (FIRST.iter().position(|f| *f == leaf).unwrap_or(FIRST.len()), name.to_string())
}

/// An answer's other fields, by name.
type Fields<'a> = Vec<(&'a String, &'a Value)>;

/// The list an answer carries – itself, a field holding one, or the API's wrapper object with a
/// single list inside (`"Keys": {"Key": [...]}`) – and the answer's other scalar fields.
fn list_in(v: &Value) -> Option<(&Vec<Value>, Fields<'_>)> {
    match v {
        Value::Array(items) => Some((items, Vec::new())),
        Value::Object(m) => {
            let items = m.iter().find_map(|(_, f)| match f {
                Value::Array(items) => Some(items),
                Value::Object(w) if w.len() == 1 => w.values().next().and_then(Value::as_array),
                _ => None,
            })?;
            let rest = m.iter().filter(|(k, f)| !f.is_object() && !f.is_array() && *k != "RequestId").collect();
            Some((items, rest))
        }
        _ => None,
    }
}

/// An answer that is one object under one name (`{"KeyMetadata": {…}}`, with its RequestId)
/// is shown as that object.
fn unwrap_single(v: &Value) -> &Value {
    if let Value::Object(m) = v {
        let mut fields = m.iter().filter(|(k, _)| *k != "RequestId");
        if let (Some((_, inner @ Value::Object(_))), None) = (fields.next(), fields.next()) {
            return inner;
        }
    }
    v
}

fn flatten<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => flatten_map(prefix, m, out),
        other => out.push((prefix.to_string(), other)),
    }
}

fn flatten_map<'a>(prefix: &str, m: &'a Map<String, Value>, out: &mut Vec<(String, &'a Value)>) {
    for (k, v) in m {
        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        flatten(&name, v, out);
    }
}

/// A value as one terminal-safe line: strings as they are, lists and objects as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => safe(s),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            safe(&items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        }
        other => safe(&other.to_string()),
    }
}

/// `s` with everything that could move the cursor, split a row or reorder the line escaped.
pub fn safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_bidi_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Unicode's explicit direction controls (embeddings, overrides, isolates, marks): shown as
/// escapes so text cannot appear in another order than it is stored.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Columns padded to their widest cell (display width: CJK characters take two columns).
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.width());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i].saturating_sub(c.width()) + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header);
    out.push_str(&line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>()));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_wrapped_list_becomes_rows_with_its_paging_below() {
        let v = json!({"Keys": {"Key": [{"KeyId": "k1", "KeyArn": "arn:1"}, {"KeyId": "k-22", "KeyArn": "arn:2"}]},
                       "TotalCount": 2, "PageNumber": 1, "PageSize": 10, "RequestId": "r"});
        let t = render(&v, Output::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "KeyId  KeyArn");
        assert_eq!(lines[1], "-----  ------");
        assert_eq!(lines[2], "k1     arn:1");
        assert_eq!(lines[3], "k-22   arn:2");
        assert!(lines[4].contains("TotalCount: 2") && !lines[4].contains("RequestId"), "{t}");
        assert_eq!(render(&v, Output::Text), "k1\tarn:1\nk-22\tarn:2\n");
    }

    #[test]
    fn a_single_object_is_a_field_value_table() {
        let v = json!({"KeyMetadata": {"KeyId": "k1", "KeyState": "Enabled"}, "RequestId": "r"});
        assert_eq!(render(&v, Output::Text), "KeyId\tk1\nKeyState\tEnabled\n");
        let nested = json!({"A": {"B": 1}, "C": "x"});
        assert_eq!(render(&nested, Output::Text), "A.B\t1\nC\tx\n");
    }

    #[test]
    fn stored_strings_cannot_forge_rows_or_drive_the_terminal() {
        let v = json!([{"Description": "a\tb\nKEY-FORGED\u{1b}[2J\u{202e}txt.exe"}]);
        let text = render(&v, Output::Text);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\t'));
        assert!(text.contains("\\n") && text.contains("\\u{1b}") && text.contains("\\u{202e}"), "{text}");
    }

    #[test]
    fn wide_characters_keep_columns_aligned() {
        let v = json!([{"Name": "密钥", "State": "Enabled"}, {"Name": "ab", "State": "x"}]);
        let t = render(&v, Output::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2].find("Enabled").map(|i| lines[2][..i].width()), Some(6));
        assert_eq!(lines[3].find('x').map(|i| lines[3][..i].width()), Some(6));
    }
}
