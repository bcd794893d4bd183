//! Durations as the API writes them: `7d`, `168h`, `10080m`, `604800s` in; `"604800s"` out.

use crate::error::{KmsError, Result};

/// Parses `<integer><d|h|m|s>` into seconds and checks it lies in `min..=max` seconds.
pub fn parse_interval(param: &str, value: &str, min: i64, max: i64) -> Result<i64> {
    let v = value.trim();
    // The unit is the last *character*: splitting at a byte offset panicked on a multi-byte one.
    let unit = v.chars().last().unwrap_or(' ');
    let num = &v[..v.len() - unit.len_utf8().min(v.len())];
    let mult = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(KmsError::invalid(param, "use an integer with a unit d, h, m or s, e.g. 7d or 604800s")),
    };
    let n: i64 = num
        .parse()
        .ok()
        .filter(|n: &i64| *n > 0 && num.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| KmsError::invalid(param, "use an integer with a unit d, h, m or s, e.g. 7d or 604800s"))?;
    let secs = n
        .checked_mul(mult)
        .filter(|s| (min..=max).contains(s))
        .ok_or_else(|| KmsError::invalid(param, format_args!("it must lie between {}s and {}s", min, max)))?;
    Ok(secs)
}

pub fn format_interval(secs: i64) -> String {
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;
    const D: i64 = 86_400;

    #[test]
    fn all_units_parse() {
        for (s, want) in [("7d", 7 * D), ("604800s", 7 * D), ("168h", 7 * D), ("10080m", 7 * D), ("730d", 730 * D)] {
            assert_eq!(parse_interval("RotationInterval", s, 7 * D, 730 * D).unwrap(), want, "{s}");
        }
        assert_eq!(format_interval(7 * D), "604800s");
    }

    #[test]
    fn out_of_range_and_garbage_are_refused() {
        for s in [
            "6d",
            "731d",
            "604799s",
            "",
            "d",
            "7",
            "7w",
            "-7d",
            "+7d",
            "7.5d",
            "99999999999999999d",
            "7é",
            "é",
            "7日",
            "😀",
        ] {
            let e = parse_interval("RotationInterval", s, 7 * D, 730 * D).unwrap_err();
            assert!(e.message().contains("RotationInterval"), "{s}");
        }
    }
}
