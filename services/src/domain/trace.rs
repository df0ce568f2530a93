//! W3C trace context (`traceparent`): one update is one trace from the CS to the national
//! server. The CS takes the trace from the existing system's `traceparent` header (or starts
//! one per update); every tier records the trace id in its history row and forwards the update
//! with a child span of its own, and relay requests carry the `traceparent` header.

use juki_telemetry::Span;
use ring::rand::{SecureRandom, SystemRandom};

/// A parsed `traceparent` (version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: String,
    /// 16 lower-case hex digits, not all zero.
    pub span_id: String,
    /// 2 hex digits (01 = sampled).
    pub flags: String,
    /// Started here ([`TraceParent::root`]), not received: its span is no span of a caller's,
    /// so a span made under it names no parent.
    pub local: bool,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    loop {
        if SystemRandom::new().fill(&mut buf).is_err() {
            // No system randomness: fall back to the clock (ids need only be unlikely to clash).
            let nanos = jiff::Timestamp::now().as_nanosecond();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (nanos >> ((i % 16) * 8)) as u8 ^ (i as u8);
            }
        }
        if buf.iter().any(|b| *b != 0) {
            return buf.iter().map(|b| format!("{b:02x}")).collect();
        }
    }
}

impl TraceParent {
    /// Parses a `traceparent` header value; None when it is not a valid one.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace_id, span_id, flags] = parts.as_slice() else {
            return None;
        };
        let valid = is_hex(version, 2)
            && *version != "ff"
            && is_hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && is_hex(span_id, 16)
            && span_id.bytes().any(|b| b != b'0')
            && is_hex(flags, 2);
        valid.then(|| TraceParent {
            trace_id: (*trace_id).to_owned(),
            span_id: (*span_id).to_owned(),
            flags: (*flags).to_owned(),
            local: false,
        })
    }

    /// A new trace (sampled).
    pub fn root() -> TraceParent {
        TraceParent {
            trace_id: random_hex(16),
            span_id: random_hex(8),
            flags: "01".into(),
            local: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id.clone(),
            span_id: random_hex(8),
            flags: self.flags.clone(),
            local: false,
        }
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }

    /// This node's span of an update, `under` the span that brought it (none when this node
    /// started the trace), to be exported when it ends.
    pub fn exported_span(&self, name: &'static str, under: Option<&TraceParent>) -> Span {
        let span = Span::start(name, &self.trace_id, &self.span_id);
        match under {
            Some(parent) if !parent.local => span.child_of(&parent.span_id, true),
            _ => span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_children() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(h).unwrap();
        assert_eq!(tp.header(), h);
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        let root = TraceParent::root();
        assert!(root.local && !tp.local && !child.local);
        assert!(TraceParent::parse(&root.header()).is_some());
        assert_ne!(root.trace_id, TraceParent::root().trace_id);
    }
}
