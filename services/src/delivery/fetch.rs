//! Fetching content from the upstream node (a CS from its prefecture, a prefecture from the
//! national server): `GET <upstream>/v1/deliveries/content/<sha256>`, streamed into
//! `content/<sha256>.part` and asked with `Range: bytes=<part size>-` when a part is there, so
//! an interrupted transfer resumes instead of starting over. Blocking: run it on the blocking
//! pool. Whatever fails, nothing but the `.part` is left, and only bytes that may resume.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::content::{CHUNK, ContentStore, Incoming, Stored};
use crate::delivery::{Deliveries, Sha256};
use crate::error::Error;
use crate::relay::client::{self, Streaming};

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetched {
    pub sha256: String,
    pub bytes: u64,
    /// The node had the content already: nothing was downloaded.
    pub already_present: bool,
    /// Bytes of an earlier partial download this fetch continued from.
    pub resumed_from: u64,
}

/// The content path on a node, relative to its base URL.
pub fn content_path(sha: &Sha256) -> String {
    format!("/v1/deliveries/content/{sha}")
}

fn fetch_error(rule: &'static str, message: String) -> Error {
    Error::Fetch { rule, message }
}

/// Fetches `sha` from `upstream` (a base URL) into the store, unless it is there already.
pub fn fetch(
    deliveries: &Arc<Deliveries>,
    upstream: &str,
    sha: &Sha256,
    timeout: Duration,
) -> Result<Fetched, Error> {
    let store = &deliveries.content;
    if let Some(bytes) = store.size(sha) {
        return Ok(present(sha, bytes));
    }
    let _claim = deliveries.claim(sha)?;
    // Another fetch may have finished between the look and the claim.
    if let Some(bytes) = store.size(sha) {
        return Ok(present(sha, bytes));
    }
    let incoming = store.resume(sha)?;
    let url = format!("{upstream}{}", content_path(sha));
    let range = format!("bytes={}-", incoming.bytes());
    let headers: &[(&str, &str)] = if incoming.bytes() > 0 {
        &[("Range", range.as_str())]
    } else {
        &[]
    };
    let response = client::get_streaming(&url, headers, timeout)
        .map_err(|e| fetch_error("upstream_unavailable", format!("GET {url}: {e}")))?;
    match response.status {
        200 | 206 => transfer(store, incoming, response, sha, &url),
        416 => finish_complete_part(incoming, &response, sha, &url),
        404 => Err(fetch_error(
            "upstream_missing",
            format!("{url}: the upstream does not hold {sha} (yet)"),
        )),
        status => Err(fetch_error(
            "upstream_refused",
            format!("GET {url}: {status} {}", excerpt(response.body)),
        )),
    }
}

/// Receives a 200 (the whole content) or a 206 (the rest of the part) into the part, then
/// verifies it and moves it into place.
fn transfer(
    store: &ContentStore,
    mut incoming: Incoming,
    response: Streaming,
    sha: &Sha256,
    url: &str,
) -> Result<Fetched, Error> {
    let mut resumed_from = incoming.bytes();
    // The content's size: every byte up to it must arrive.
    let total = if response.status == 206 {
        Some(check_content_range(&response, resumed_from, url)?)
    } else {
        if resumed_from > 0 {
            // The upstream sent the whole content: the part starts over.
            incoming.abandon();
            incoming = store.resume(sha)?;
            resumed_from = 0;
        }
        response.length
    };
    let total = total.ok_or_else(|| {
        fetch_error(
            "upstream_refused",
            format!("GET {url}: the answer has no Content-Length"),
        )
    })?;
    copy_body(&mut incoming, response.body, total, url)?;
    let bytes = incoming.bytes();
    match incoming.finish() {
        Ok(_) => Ok(Fetched {
            sha256: sha.to_string(),
            bytes,
            already_present: false,
            resumed_from,
        }),
        Err(Error::DigestMismatch { expected, actual }) => Err(fetch_error(
            "digest_mismatch",
            format!("{url}: the content's sha256 is {actual}, not {expected}; refused and removed"),
        )),
        Err(e) => Err(e),
    }
}

fn present(sha: &Sha256, bytes: u64) -> Fetched {
    Fetched {
        sha256: sha.to_string(),
        bytes,
        already_present: true,
        resumed_from: 0,
    }
}

/// The total size from a 206's `Content-Range: bytes <first>-<last>/<total>`, which must start
/// where the part ends.
fn check_content_range(response: &Streaming, from: u64, url: &str) -> Result<u64, Error> {
    let bad = |what: &str| {
        fetch_error(
            "upstream_refused",
            format!("GET {url}: Content-Range {what}"),
        )
    };
    let value = response
        .header("content-range")
        .ok_or_else(|| bad("missing"))?;
    let (range, total) = value
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(|| bad(&format!("{value:?} malformed")))?;
    let first = range.split('-').next().and_then(|f| f.parse::<u64>().ok());
    let total = total.parse::<u64>().ok();
    match (first, total) {
        (Some(first), Some(total)) if first == from => Ok(total),
        _ => Err(bad(&format!("{value:?} does not continue at byte {from}"))),
    }
}

/// A 416 to a resumed request: the part may already hold every byte (a crash between the
/// last byte and the rename); if its size is the content's, finish it, else start over.
fn finish_complete_part(
    incoming: Incoming,
    response: &Streaming,
    sha: &Sha256,
    url: &str,
) -> Result<Fetched, Error> {
    let have = incoming.bytes();
    let total = response
        .header("content-range")
        .and_then(|v| v.strip_prefix("bytes */"))
        .and_then(|t| t.parse::<u64>().ok());
    if total != Some(have) {
        incoming.abandon();
        return Err(fetch_error(
            "upstream_refused",
            format!(
                "GET {url}: 416 for a part of {have} bytes (content: {total:?}); the part was removed, the next fetch starts over"
            ),
        ));
    }
    let bytes = match incoming.finish()? {
        Stored::New { bytes } | Stored::Present { bytes } => bytes,
    };
    Ok(Fetched {
        sha256: sha.to_string(),
        bytes,
        already_present: false,
        resumed_from: have,
    })
}

/// Streams `body` into `incoming` until it holds `end` bytes. A stream that ends early or
/// breaks keeps what arrived (synced) for the next try and says how far it got.
fn copy_body(
    incoming: &mut Incoming,
    mut body: Box<dyn Read + Send>,
    end: u64,
    url: &str,
) -> Result<(), Error> {
    let mut buf = vec![0u8; CHUNK];
    while incoming.bytes() < end {
        let n = match body.read(&mut buf) {
            Ok(0) => return Err(truncated(incoming, end, url, "the stream ended")),
            Ok(n) => n,
            Err(e) => return Err(truncated(incoming, end, url, &e.to_string())),
        };
        incoming.write(&buf[..n])?;
    }
    Ok(())
}

fn truncated(incoming: &Incoming, end: u64, url: &str, why: &str) -> Error {
    let kept = match incoming.sync() {
        Ok(()) => format!("{} bytes kept to resume", incoming.bytes()),
        Err(e) => format!("the part could not be synced ({e})"),
    };
    fetch_error(
        "truncated",
        format!(
            "GET {url}: {why} after {} of {end} bytes; {kept}",
            incoming.bytes()
        ),
    )
}

/// The first bytes of an error answer, for the message.
fn excerpt(body: Box<dyn Read + Send>) -> String {
    let mut text = String::new();
    let _ = body.take(300).read_to_string(&mut text);
    text
}
