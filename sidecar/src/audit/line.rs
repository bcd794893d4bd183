//! One audit line: what a request's own thread renders (its fields, borrowed from the request),
//! and how the writer seals that rendering into the chain – `seq` and `prev` in front, the `mac`
//! at the end. The result is byte for byte what serialising an [`AuditEvent`] gives, so every
//! reader parses a line as one (`AUDIT.md`; `sealed_lines_are_serialised_events` pins it).
//!
//! Rendering on the request's thread, into the writer's queue, is what keeps the trail cheap: a
//! line crosses to the writer as bytes, not as a dozen strings allocated on one thread and freed
//! on the other.

use kms_core::engine::ChainKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

#[cfg(test)]
use super::AuditEvent;

/// `,"mac":"` + 64 hex + `"}`: how every keyed line ends.
pub(super) const MAC_PREFIX: &[u8] = b",\"mac\":\"";
pub(super) const MAC_SUFFIX_LEN: usize = MAC_PREFIX.len() + 64 + 2;

/// What one request's line says. The fields, in this order, are an [`AuditEvent`]'s after its
/// `prev` (the writer adds `seq` and `prev`, which only it knows, and the `mac`).
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub request_id: &'a str,
    pub principal: &'a str,
    pub access_key_id: &'a str,
    pub source_ip: &'a str,
    pub user_agent: &'a str,
    pub action: &'a str,
    pub resources: &'a [String],
    pub code: &'a str,
    pub http_status: u16,
    pub latency_us: u64,
}

impl Entry<'_> {
    /// Appends the entry's JSON object to `out`. Never a raw newline: JSON escapes every control
    /// character inside a string, so the writer's queue can end each rendering with one.
    pub(super) fn render_into(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("an entry of strings and integers serialises");
    }

    /// The entry rendered on its own, for a line that waits (a change's, or one held back by a
    /// full queue) and so must outlive the request's borrowed strings.
    pub fn rendered(&self) -> Rendered {
        let mut out = Vec::with_capacity(super::LINE_BYTES_HINT);
        self.render_into(&mut out);
        Rendered(out)
    }
}

#[cfg(test)]
impl<'a> From<&'a AuditEvent> for Entry<'a> {
    fn from(e: &'a AuditEvent) -> Entry<'a> {
        Entry {
            time: &e.time,
            request_id: &e.request_id,
            principal: &e.principal,
            access_key_id: &e.access_key_id,
            source_ip: &e.source_ip,
            user_agent: &e.user_agent,
            action: &e.action,
            resources: &e.resources,
            code: &e.code,
            http_status: e.http_status,
            latency_us: e.latency_us,
        }
    }
}

/// An [`Entry`]'s JSON object, owned. Only [`Entry::rendered`] makes one, so the writer never
/// seals bytes that are not an entry's fields.
#[derive(Debug)]
pub struct Rendered(Vec<u8>);

impl Rendered {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Appends to `out` the line for `fields` (an entry's JSON object) at `seq`, linked to `prev`,
/// with its MAC; returns the MAC.
pub(super) fn seal(key: &ChainKey, seq: u64, prev: &str, fields: &[u8], out: &mut Vec<u8>) -> [u8; 32] {
    debug_assert!(fields.len() > 2 && fields[0] == b'{' && fields[fields.len() - 1] == b'}');
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    serde_json::to_writer(&mut *out, &seq).expect("an integer serialises");
    out.extend_from_slice(b",\"prev\":");
    serde_json::to_writer(&mut *out, prev).expect("a string serialises");
    out.push(b',');
    out.extend_from_slice(&fields[1..]);
    let tag = key.mac(&out[start..]);
    out.pop(); // the closing brace; the MAC field goes before it
    out.extend_from_slice(MAC_PREFIX);
    let mut hex_tag = [0u8; 64];
    hex::encode_to_slice(tag, &mut hex_tag).expect("64 hex digits for 32 bytes");
    out.extend_from_slice(&hex_tag);
    out.extend_from_slice(b"\"}");
    tag
}

/// [`seal`] for a whole event (its `seq` and `prev` set; its `mac` ignored): how tests forge
/// and compare lines.
#[cfg(test)]
pub(super) fn seal_event(key: &ChainKey, e: &AuditEvent, out: &mut Vec<u8>) -> [u8; 32] {
    let fields = Entry::from(e).rendered();
    seal(key, e.seq, &e.prev, fields.bytes(), out)
}

/// For a keyed line: the bytes its MAC covers (the line without its `mac` field) and the MAC.
/// `None` if the line does not end the way the writer ends every keyed line.
pub(super) fn split_line(line: &[u8]) -> Option<(Vec<u8>, [u8; 32])> {
    let cut = line.len().checked_sub(MAC_SUFFIX_LEN)?;
    let (body, tail) = line.split_at(cut);
    let hex_part = tail.strip_prefix(MAC_PREFIX)?.strip_suffix(b"\"}")?;
    if hex_part.iter().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let tag: [u8; 32] = hex::decode(hex_part).ok()?.try_into().ok()?;
    let mut signed = body.to_vec();
    signed.push(b'}');
    Some((signed, tag))
}

/// The chain value a line passes on as the next line's `prev`: its MAC, or for a line written
/// before lines were keyed, the SHA-256 of its bytes.
pub(super) fn link_of(line: &[u8]) -> String {
    match split_line(line) {
        Some((_, tag)) => hex::encode(tag),
        None => hex::encode(Sha256::digest(line)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::GENESIS;
    use super::*;

    fn tricky() -> AuditEvent {
        AuditEvent {
            seq: 18_446_744_073_709_551_615,
            prev: GENESIS.into(),
            time: "2026-12-08T04:00:00Z".into(),
            request_id: "7A1B-…".into(),
            principal: "user:ali\"ce".into(),
            access_key_id: "AK\\1".into(),
            source_ip: "::1".into(),
            user_agent: "sdk/1.0 \u{7f}\u{1}\t\r\n\u{2028}中文 \"quoted\" </script>".into(),
            action: "Encrypt".into(),
            resources: vec!["acs:kms:cn-hangzhou:1:key/k".into(), String::new()],
            code: "Forbidden.KeyNotFound".into(),
            http_status: 404,
            latency_us: 123,
            mac: String::new(),
        }
    }

    #[test]
    fn sealed_lines_are_serialised_events() {
        let key = ChainKey::generate();
        for mut e in [tricky(), AuditEvent { seq: 1, prev: "ab".repeat(32), ..Default::default() }] {
            let mut line = Vec::new();
            let tag = seal_event(&key, &e, &mut line);
            e.mac = hex::encode(tag);
            assert_eq!(String::from_utf8(line.clone()).unwrap(), serde_json::to_string(&e).unwrap());
            assert!(!line.contains(&b'\n'), "one line, whatever the strings hold");
            let back: AuditEvent = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, e);
        }
    }

    /// Random strings of every kind of character JSON treats specially – quotes, backslashes,
    /// control characters, U+2028, non-ASCII, the `,"mac":"` a line ends with – in every field.
    #[test]
    fn random_entries_seal_to_the_serialised_event() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        let pieces: Vec<&str> =
            "\"|\\|\n|\r|\u{0}|\u{1f}|\u{7f}|\u{2028}|é|中|😀|,\"mac\":\"|}|a| ".split('|').collect();
        let text = |rng: &mut rand::rngs::StdRng| -> String {
            (0..rng.gen_range(0..12)).map(|_| pieces[rng.gen_range(0..pieces.len())]).collect()
        };
        let key = ChainKey::generate();
        for _ in 0..2000 {
            let mut e = AuditEvent {
                seq: rng.gen(),
                prev: text(&mut rng),
                time: text(&mut rng),
                request_id: text(&mut rng),
                principal: text(&mut rng),
                access_key_id: text(&mut rng),
                source_ip: text(&mut rng),
                user_agent: text(&mut rng),
                action: text(&mut rng),
                resources: (0..rng.gen_range(0..3)).map(|_| text(&mut rng)).collect(),
                code: text(&mut rng),
                http_status: rng.gen(),
                latency_us: rng.gen(),
                mac: String::new(),
            };
            let mut line = Vec::new();
            let tag = seal_event(&key, &e, &mut line);
            e.mac = hex::encode(tag);
            assert_eq!(line, serde_json::to_vec(&e).unwrap());
            assert!(!line.contains(&b'\n'));
            let (signed, got) = split_line(&line).unwrap();
            assert!(got == tag && key.verifies(&signed, &got));
        }
    }

    #[test]
    fn keyed_lines_split_exactly() {
        let key = ChainKey::generate();
        let e = tricky();
        // Sealed after what a batch already holds: the line is what follows it.
        let mut batch = b"earlier line\n".to_vec();
        let tag = seal_event(&key, &e, &mut batch);
        let line = batch.split_off(13);
        assert_eq!(batch, b"earlier line\n");
        let (signed, got) = split_line(&line).unwrap();
        assert_eq!(got, tag);
        assert_eq!(signed, serde_json::to_vec(&e).unwrap());
        assert!(key.verifies(&signed, &got));
        assert_eq!(link_of(&line), hex::encode(tag));
        for bad in [&b""[..], b"{}", &line[..line.len() - 1]] {
            assert!(split_line(bad).is_none());
        }
    }
}
