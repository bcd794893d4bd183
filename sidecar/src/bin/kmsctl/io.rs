//! Reading inputs and writing outputs.

use std::io::{Read, Write};

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
