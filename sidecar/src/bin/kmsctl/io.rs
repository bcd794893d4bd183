//! Reading inputs, writing outputs and printing answers, and the `--Param value` words of the
//! generic action form.

use std::io::{Read, Write};

use serde_json::Value;

/// `--Name value` or `--Name=value` pairs.
pub fn parse_action_params(words: &[String]) -> Result<Vec<(String, String)>, String> {
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

pub fn read_input(path: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    if path == "-" {
        std::io::stdin().read_to_end(&mut buf).map_err(|e| e.to_string())?;
    } else {
        buf = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(buf)
}

pub fn write_output(path: &str, data: &[u8]) -> Result<(), String> {
    if path == "-" {
        std::io::stdout().write_all(data).map_err(|e| e.to_string())
    } else {
        std::fs::write(path, data).map_err(|e| format!("{path}: {e}"))
    }
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap());
}
