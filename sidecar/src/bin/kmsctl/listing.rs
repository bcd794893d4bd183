//! `list-keys` and `list-aliases`: every entry, page after page, and for keys what a person
//! looks for in a list (aliases, spec, state, …) rather than ListKeys' bare ids.

use std::collections::BTreeMap;

use kms_client::client::{Client, ClientError};
use serde_json::{json, Value};

/// Every entry of a paged list action: `items` is the field holding the API's wrapper
/// (`Keys` → `{"Key": [...]}`).
fn all_pages(c: &Client, action: &str, items: &str) -> Result<Vec<Value>, ClientError> {
    let mut out = Vec::new();
    for page in 1u32.. {
        let params = vec![("PageSize".to_string(), "100".to_string()), ("PageNumber".to_string(), page.to_string())];
        let r = c.call_params(action, params)?;
        let got = r[items].as_object().and_then(|w| w.values().next()).and_then(Value::as_array).cloned();
        let got = got.unwrap_or_default();
        let done = got.is_empty() || u64::from(page) * 100 >= r["TotalCount"].as_u64().unwrap_or(0);
        out.extend(got);
        if done {
            break;
        }
    }
    Ok(out)
}

/// Every alias, as ListAliases gives them.
pub fn aliases(c: &Client) -> Result<Value, ClientError> {
    Ok(Value::Array(all_pages(c, "ListAliases", "Aliases")?))
}

/// Every key: id, aliases, spec, usage, state, protection level, creation date, next rotation
/// and description. A key deleted between the listing and its DescribeKey is left out.
pub fn keys(c: &Client) -> Result<Value, ClientError> {
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in all_pages(c, "ListAliases", "Aliases")? {
        if let (Some(k), Some(n)) = (a["KeyId"].as_str(), a["AliasName"].as_str()) {
            aliases.entry(k.to_string()).or_default().push(n.to_string());
        }
    }
    let mut rows = Vec::new();
    for k in all_pages(c, "ListKeys", "Keys")? {
        let Some(id) = k["KeyId"].as_str() else { continue };
        let md = match c.describe_key(id) {
            Ok(r) => r.key_metadata,
            Err(e) if e.code() == Some("Forbidden.KeyNotFound") => continue,
            Err(e) => return Err(e),
        };
        rows.push(json!({
            "KeyId": md.key_id,
            "Aliases": aliases.remove(&md.key_id).unwrap_or_default(),
            "KeySpec": md.key_spec,
            "KeyUsage": md.key_usage,
            "KeyState": md.key_state,
            "ProtectionLevel": md.protection_level,
            "CreationDate": md.creation_date,
            "NextRotationDate": md.next_rotation_date,
            "Description": md.description,
        }));
    }
    Ok(Value::Array(rows))
}
