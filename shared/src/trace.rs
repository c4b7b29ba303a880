//! W3C Trace Context (`traceparent`): parsed from a run request, carried to
//! the worker in the assignment, and sent onward — as a child span — on every
//! API and model call the run makes, so a caller's trace continues through
//! Weft to the systems it calls.

use std::fmt;

/// `00-<trace id>-<parent span id>-<flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

impl TraceParent {
    /// Parses a `traceparent` header (version 00); `None` if malformed or
    /// all-zero, as the spec requires.
    pub fn parse(header: &str) -> Option<TraceParent> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        if parts.len() != 4 || parts[0] != "00" {
            return None;
        }
        let mut t = TraceParent {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        hex_into(parts[1], &mut t.trace_id)?;
        hex_into(parts[2], &mut t.span_id)?;
        let mut f = [0u8; 1];
        hex_into(parts[3], &mut f)?;
        t.flags = f[0];
        if t.trace_id == [0; 16] || t.span_id == [0; 8] {
            return None;
        }
        Some(t)
    }

    /// A new trace (sampled), for a run that came without one.
    pub fn new_root() -> TraceParent {
        TraceParent {
            trace_id: rand_bytes(),
            span_id: rand_bytes(),
            flags: 1,
        }
    }

    /// The same trace with a new span id: what a call made on its behalf sends.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: rand_bytes(),
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    // UUIDv7 carries 74 random bits; two of them are plenty for ids.
    let a = uuid::Uuid::now_v7().into_bytes();
    let b = uuid::Uuid::now_v7().into_bytes();
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        // Bytes 8.. of a v7 UUID are random (bar the variant bits).
        *o = if i % 2 == 0 {
            a[8 + (i / 2) % 8]
        } else {
            b[8 + (i / 2) % 8]
        } ^ (i as u8).wrapping_mul(31);
    }
    if out.iter().all(|x| *x == 0) {
        out[N - 1] = 1;
    }
    out
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats_and_makes_children() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(h).unwrap();
        assert_eq!(t.to_string(), h);
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        assert!(c
            .to_string()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        let r = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&r.to_string()), Some(r));
    }
}
