//! A SecretProviderClass's `objects`, as Alibaba's provider reads them: a YAML list of
//! `objectName` (a secret's name or ARN), `objectAlias` (the file name), `objectVersion` (a
//! VersionId), `objectVersionLabel` (a stage: ACSCurrent, ACSPrevious or one's own),
//! `objectType` (`kms`, the default) and `jmesPath` (`path` + `objectAlias`: parts of a JSON
//! secret as files of their own). Parsed into checked types once; every file name is relative and
//! free of `..` before anything is fetched.

use serde::Deserialize;

/// One object of the list, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ObjectSpec {
    object_name: String,
    #[serde(default)]
    object_alias: String,
    #[serde(default)]
    object_version: String,
    #[serde(default)]
    object_version_label: String,
    #[serde(default)]
    object_type: String,
    #[serde(default)]
    jmes_path: Vec<JmesSpec>,
    /// Accepted and ignored: the secret is read from this KMS.
    #[serde(default)]
    kms_endpoint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JmesSpec {
    path: String,
    object_alias: String,
}

/// A secret to fetch and the files it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretObject {
    /// The secret's name (an ARN is reduced to it).
    pub secret_name: String,
    /// The file the whole value goes to.
    pub file: String,
    /// A pinned VersionId, if any.
    pub version_id: Option<String>,
    /// A stage, if any (neither: ACSCurrent).
    pub version_stage: Option<String>,
    /// Parts of a JSON value: (JMESPath expression, file).
    pub parts: Vec<(String, String)>,
}

/// Parses the `objects` parameter. `translate` is the `pathTranslation` parameter: the
/// character `/` in names becomes in file names (`_` by default; `False` keeps `/`, making
/// subdirectories).
pub fn parse(objects: &str, translate: Option<&str>) -> Result<Vec<SecretObject>, String> {
    let translate = match translate.map(str::trim) {
        None | Some("") => Some('_'),
        Some(t) if t.eq_ignore_ascii_case("false") => None,
        Some(t) if t.chars().count() == 1 => t.chars().next(),
        Some(t) => return Err(format!("pathTranslation must be False or one character, not {t:?}")),
    };
    let specs: Vec<ObjectSpec> = serde_yaml_ng::from_str(objects).map_err(|e| format!("objects: {e}"))?;
    if specs.is_empty() {
        return Err("objects: the list is empty".into());
    }
    let mut out = Vec::new();
    let mut files: Vec<String> = Vec::new();
    for s in specs {
        if !s.object_type.is_empty() && !s.object_type.eq_ignore_ascii_case("kms") {
            return Err(format!(
                "{}: objectType {:?} is not served here (only kms secrets)",
                s.object_name, s.object_type
            ));
        }
        let _ = &s.kms_endpoint;
        let name = secret_name(&s.object_name)?;
        let file = file_name(if s.object_alias.is_empty() { &name } else { &s.object_alias }, translate)?;
        let mut parts = Vec::new();
        for j in &s.jmes_path {
            if j.path.trim().is_empty() {
                return Err(format!("{name}: a jmesPath entry has no path"));
            }
            jmespath::compile(&j.path).map_err(|e| format!("{name}: jmesPath {:?}: {e}", j.path))?;
            parts.push((j.path.clone(), file_name(&j.object_alias, translate)?));
        }
        for f in std::iter::once(&file).chain(parts.iter().map(|(_, f)| f)) {
            if files.contains(f) {
                return Err(format!("two objects would both be the file {f:?}: give one an objectAlias"));
            }
            files.push(f.clone());
        }
        out.push(SecretObject {
            secret_name: name,
            file,
            version_id: Some(s.object_version).filter(|v| !v.is_empty()),
            version_stage: Some(s.object_version_label).filter(|v| !v.is_empty()),
            parts,
        });
    }
    Ok(out)
}

/// A secret's name from `objectName`: the name itself, or an ARN `acs:kms:<region>:<account>:secret/<name>`.
fn secret_name(object_name: &str) -> Result<String, String> {
    let n = object_name.trim();
    if n.is_empty() {
        return Err("an object has no objectName".into());
    }
    if let Some(rest) = n.strip_prefix("acs:kms:") {
        let (_, resource) = rest.rsplit_once(':').ok_or_else(|| format!("{n:?} is not a secret's ARN"))?;
        return resource
            .strip_prefix("secret/")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{n:?} is not a secret's ARN (acs:kms:<region>:<account>:secret/<name>)"));
    }
    Ok(n.to_string())
}

/// A file name inside the volume: relative, no `..`, no empty parts, no control characters.
fn file_name(name: &str, translate: Option<char>) -> Result<String, String> {
    let translated: String = match translate {
        Some(c) => name.chars().map(|x| if x == '/' { c } else { x }).collect(),
        None => name.trim_start_matches('/').to_string(),
    };
    let ok = !translated.is_empty()
        && !translated.starts_with('/')
        && translated.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
        && !translated.starts_with("..")
        && !translated.chars().any(char::is_control);
    if !ok {
        return Err(format!("{name:?} is not a usable file name in the volume (relative, no '..')"));
    }
    Ok(translated)
}

/// The value `path` selects in the JSON text `value`, as file contents: a string as it is,
/// anything else as JSON. Selecting nothing is an error, never an empty file.
pub fn select(value: &str, path: &str) -> Result<Vec<u8>, String> {
    let expr = jmespath::compile(path).map_err(|e| format!("jmesPath {path:?}: {e}"))?;
    let data =
        jmespath::Variable::from_json(value).map_err(|_| format!("jmesPath {path:?}: the secret is not JSON"))?;
    let found = expr.search(data).map_err(|e| format!("jmesPath {path:?}: {e}"))?;
    match &*found {
        jmespath::Variable::Null => Err(format!("jmesPath {path:?} selects nothing in the secret")),
        jmespath::Variable::String(s) => Ok(s.clone().into_bytes()),
        other => serde_json::to_vec(other).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibabas_object_forms_parse() {
        let objects = r#"
- objectName: "db/password"
  objectVersionLabel: ACSPrevious
- objectName: "acs:kms:cn-hangzhou:123456:secret/api"
  objectAlias: api-key
  objectVersion: v3
- objectName: creds
  jmesPath:
    - path: username
      objectAlias: user
    - path: "hosts[0]"
      objectAlias: host
"#;
        let o = parse(objects, None).unwrap();
        assert_eq!(o[0].file, "db_password");
        assert_eq!(o[0].version_stage.as_deref(), Some("ACSPrevious"));
        assert_eq!((o[1].secret_name.as_str(), o[1].file.as_str()), ("api", "api-key"));
        assert_eq!(o[1].version_id.as_deref(), Some("v3"));
        assert_eq!(o[2].parts, [("username".to_string(), "user".to_string()), ("hosts[0]".into(), "host".into())]);
        assert_eq!(parse("- objectName: a/b", Some("False")).unwrap()[0].file, "a/b");
        assert_eq!(parse("- objectName: a/b", Some("-")).unwrap()[0].file, "a-b");
    }

    #[test]
    fn unsafe_names_and_unknown_settings_are_refused() {
        for bad in [
            "- objectName: x\n  objectAlias: ../etc/passwd",
            "- objectName: x\n  objectAlias: a/../../b",
            "- objectName: x\n  objectType: oos",
            "- objectName: x\n  crossAccountRoleArn: acs:ram::1:role/r",
            "- objectName: x\n- objectName: x",
            "- objectName: x\n  jmesPath:\n    - path: 'a['\n      objectAlias: y",
            "- objectName: acs:kms:cn:1:key/k",
            "[]",
        ] {
            let translate = if bad.contains("a/../../b") { Some("False") } else { None };
            assert!(parse(bad, translate).is_err(), "{bad}");
        }
        assert!(parse("- objectName: x\n  objectAlias: ../etc/passwd", Some("False")).is_err());
        // A leading '/' is dropped (as Alibaba's provider does): the file stays inside the volume.
        assert_eq!(parse("- objectName: x\n  objectAlias: /abs", Some("False")).unwrap()[0].file, "abs");
    }

    #[test]
    fn parts_of_a_json_secret() {
        let v = r#"{"username":"app","port":5432,"hosts":["a","b"]}"#;
        assert_eq!(select(v, "username").unwrap(), b"app");
        assert_eq!(select(v, "port").unwrap(), b"5432");
        assert_eq!(select(v, "hosts").unwrap(), br#"["a","b"]"#);
        assert!(select(v, "missing").unwrap_err().contains("selects nothing"));
        assert!(select("not json", "a").unwrap_err().contains("not JSON"));
    }
}
