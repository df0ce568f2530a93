//! File delivery: the content a node serves to the tier below (`GET
//! /v1/deliveries/content/{sha256}`, with `Range`), and the operator's admin endpoints that put
//! content on the national server, make a node fetch from its upstream and stage a file, show
//! what a node holds, and roll a file back.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::delivery::apply::Withdrawn;
use crate::delivery::content::{CHUNK, Stored};
use crate::delivery::{Deliveries, FileName, Sha256, fetch, parse_range};
use crate::domain::identity::Role;
use crate::error::Error;
use crate::http::routes::AppState;
use crate::metrics::Metrics;

/// How long one read or write of a fetch from the upstream may stall.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

fn deliveries(state: &AppState) -> Result<Arc<Deliveries>, Error> {
    state
        .deliveries
        .clone()
        .ok_or_else(|| Error::NotReady("this node has no delivery directory".into()))
}

/// The part of a file a response sends, read as the client takes it (64 KiB at a time: a
/// large file never sits in memory), counted as served.
struct FileBody {
    file: File,
    remaining: u64,
    metrics: Metrics,
}

impl MessageBody for FileBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.remaining)
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = self.remaining.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let read = self.file.read(&mut buf);
        Poll::Ready(Some(match read {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "content file shorter than its size",
            )),
            Ok(n) => {
                self.remaining -= n as u64;
                self.metrics.delivery_bytes("served", n as u64);
                buf.truncate(n);
                Ok(Bytes::from(buf))
            }
            Err(e) => Err(e),
        }))
    }
}

/// `GET /v1/deliveries/content/{sha256}`: the content, whole (200) or the `Range` asked for
/// (206 with `Content-Range`); 404 when this node does not hold it, 400 for a malformed digest.
pub(crate) async fn get_content(
    state: web::Data<AppState>,
    sha: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, Error> {
    let sha = Sha256::parse(&sha)?;
    let deliveries = deliveries(&state)?;
    let (mut file, size) = deliveries.content.open_content(&sha)?;
    let range = req.headers().get("range").and_then(|v| v.to_str().ok());
    let (mut builder, remaining) = match parse_range(range, size) {
        Err(e) => {
            return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header(("Content-Range", format!("bytes */{size}")))
                .json(e.body()));
        }
        Ok(None) => (HttpResponse::Ok(), size),
        Ok(Some((first, last))) => {
            file.seek(SeekFrom::Start(first))
                .map_err(|e| Error::Storage(format!("seek {sha}: {e}")))?;
            let mut partial = HttpResponse::PartialContent();
            partial.insert_header(("Content-Range", format!("bytes {first}-{last}/{size}")));
            (partial, last - first + 1)
        }
    };
    Ok(builder
        .insert_header(("Accept-Ranges", "bytes"))
        .insert_header(("Content-Type", "application/octet-stream"))
        .insert_header(("ETag", format!("\"{sha}\"")))
        .body(FileBody {
            file,
            remaining,
            metrics: state.metrics.clone(),
        }))
}

/// `PUT /admin/v1/deliveries/content/{sha256}`: the operator gives a node (the national server)
/// content; streamed to disk and kept only if its sha256 is the one in the path. 201 when
/// stored, 200 when the node had it already.
pub(crate) async fn put_content(
    state: web::Data<AppState>,
    sha: web::Path<String>,
    mut payload: web::Payload,
) -> Result<HttpResponse, Error> {
    let sha = Sha256::parse(&sha)?;
    let deliveries = deliveries(&state)?;
    if let Some(bytes) = deliveries.content.size(&sha) {
        return Ok(stored(&sha, Stored::Present { bytes }));
    }
    let mut incoming = deliveries.content.upload(&sha)?;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidBody(format!("content: {e}")))?;
        incoming.write(&chunk)?;
    }
    // Syncing a large file takes a while: not on the worker thread.
    let result = web::block(move || incoming.finish())
        .await
        .map_err(|e| Error::Blocking(e.to_string()))??;
    tracing::info!(sha256 = %sha, ?result, "delivery content received");
    Ok(stored(&sha, result))
}

fn stored(sha: &Sha256, result: Stored) -> HttpResponse {
    let (status, bytes, present) = match result {
        Stored::New { bytes } => (StatusCode::CREATED, bytes, false),
        Stored::Present { bytes } => (StatusCode::OK, bytes, true),
    };
    HttpResponse::build(status)
        .json(json!({"sha256": sha.as_str(), "bytes": bytes, "alreadyPresent": present}))
}

/// The body of `POST /admin/v1/deliveries/fetch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchRequest {
    sha256: String,
    /// Stage the content as the next version of this file (applied at the next start).
    #[serde(default)]
    file: Option<String>,
    /// Ed25519 signature (hex) of the file name and sha256, by a key the node trusts; needed to
    /// stage when the node has trusted keys.
    #[serde(default)]
    signature: Option<String>,
}

/// `POST /admin/v1/deliveries/fetch` `{"sha256", "file"?}`: fetch the content from the upstream
/// (resuming a partial download) while the upstream is in its online window, verify it, and
/// stage it as `file` if given. Answers the fetch (`bytes`, `alreadyPresent`, `resumedFrom`)
/// and `staged`.
pub(crate) async fn post_fetch(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let request: FetchRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(format!("fetch request: {e}")))?;
    let sha = Sha256::parse(&request.sha256)?;
    let file = request.file.as_deref().map(FileName::parse).transpose()?;
    let deliveries = deliveries(&state)?;
    // Refused before anything is fetched: the content is checked against the signed sha256.
    if let Some(file) = &file {
        deliveries
            .keys
            .check(file, &sha, request.signature.as_deref())
            .inspect_err(|e| tracing::warn!(file = file.as_str(), sha256 = %sha, error = %e, "unsigned delivery refused"))?;
    }
    if state.identity.role == Role::National {
        // The source of the tree has nothing to fetch from: it stages what it was given.
        return stage_uploaded(&deliveries, &sha, file.as_ref()).map(|answer| {
            tracing::info!(sha256 = %sha, staged = request.file.as_deref().unwrap_or(""), "delivery staged");
            HttpResponse::Ok().json(answer)
        });
    }
    let upstream = state.relay.upstream.clone().ok_or_else(|| {
        Error::NotReady("no upstream URL configured: nothing to fetch from".into())
    })?;
    // Content moves only while the path is online (the same calendar as the relay).
    if !state
        .relay
        .upstream_open(&state.identity, state.clock.now())
    {
        return Err(Error::NotReady(
            "the upstream is outside its online window: fetch while it is online".into(),
        ));
    }
    let fetched = web::block(move || -> Result<_, Error> {
        let fetched = fetch::fetch(&deliveries, &upstream, &sha, FETCH_TIMEOUT)?;
        if let Some(file) = &file {
            deliveries.stage(file, &sha)?;
        }
        Ok(fetched)
    })
    .await
    .map_err(|e| Error::Blocking(e.to_string()))?
    .inspect_err(
        |e| tracing::warn!(sha256 = %request.sha256, error = %e, "delivery fetch failed"),
    )?;
    if !fetched.already_present {
        let received = fetched.bytes - fetched.resumed_from;
        state.metrics.delivery_bytes("fetched", received);
    }
    tracing::info!(
        sha256 = %fetched.sha256,
        bytes = fetched.bytes,
        already_present = fetched.already_present,
        resumed_from = fetched.resumed_from,
        staged = request.file.as_deref().unwrap_or(""),
        "delivery fetched"
    );
    let mut answer = serde_json::to_value(&fetched).map_err(|e| Error::Storage(e.to_string()))?;
    answer["staged"] = json!(request.file);
    Ok(HttpResponse::Ok().json(answer))
}

/// The national server's answer to a fetch: the content must have been uploaded to it.
fn stage_uploaded(
    deliveries: &Deliveries,
    sha: &Sha256,
    file: Option<&FileName>,
) -> Result<serde_json::Value, Error> {
    let bytes = deliveries.content.size(sha).ok_or_else(|| {
        Error::ContentNotFound(format!(
            "{sha}: the national server fetches nothing; upload it first (PUT /admin/v1/deliveries/content/{sha})"
        ))
    })?;
    if let Some(file) = file {
        deliveries.stage(file, sha)?;
    }
    Ok(json!({
        "sha256": sha.as_str(), "bytes": bytes, "alreadyPresent": true, "resumedFrom": 0,
        "staged": file.map(FileName::as_str),
    }))
}

/// The body of `POST /admin/v1/deliveries/files/{file}/withdraw`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawRequest {
    sha256: String,
}

/// `POST /admin/v1/deliveries/files/{file}/withdraw` `{"sha256"}`: take back a halted
/// delivery: unstage it, or roll the file back to its previous version if it was applied.
/// Answers `withdrawn`: `unstaged`, `rolledBack` (with the version staged), `removed` (a first
/// version: the file goes at the next start) or `nothing`.
pub(crate) async fn post_withdraw(
    state: web::Data<AppState>,
    file: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let request: WithdrawRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(format!("withdraw request: {e}")))?;
    let sha = Sha256::parse(&request.sha256)?;
    let file = FileName::parse(&file)?;
    let deliveries = deliveries(&state)?;
    let name = file.as_str().to_owned();
    let done = web::block(move || deliveries.withdraw(&file, &sha))
        .await
        .map_err(|e| Error::Blocking(e.to_string()))??;
    let answer = match &done {
        Withdrawn::Unstaged => json!({"file": name, "withdrawn": "unstaged"}),
        Withdrawn::RolledBack(previous) => {
            json!({"file": name, "withdrawn": "rolledBack", "staged": previous.as_str()})
        }
        Withdrawn::Removed => json!({"file": name, "withdrawn": "removed"}),
        Withdrawn::Nothing => json!({"file": name, "withdrawn": "nothing"}),
    };
    tracing::info!(file = %name, sha256 = %request.sha256, withdrawn = ?done, "delivery withdrawn");
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /admin/v1/deliveries`: the content held (complete and partial), the staged files and
/// the applied files with their current and previous versions.
pub(crate) async fn get_deliveries(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let deliveries = deliveries(&state)?;
    let view = web::block(move || -> Result<_, Error> {
        let (content, partial) = deliveries.content.list()?;
        Ok(json!({
            "content": content,
            "partial": partial,
            "staged": deliveries.staged()?,
            "files": deliveries.records()?,
        }))
    })
    .await
    .map_err(|e| Error::Blocking(e.to_string()))??;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /admin/v1/deliveries/files/{file}/rollback`: stage the previous version of a file
/// (applied at the next start).
pub(crate) async fn post_rollback(
    state: web::Data<AppState>,
    file: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let file = FileName::parse(&file)?;
    let deliveries = deliveries(&state)?;
    let name = file.as_str().to_owned();
    let sha = web::block(move || deliveries.rollback(&file))
        .await
        .map_err(|e| Error::Blocking(e.to_string()))??;
    tracing::info!(file = %name, sha256 = %sha, "delivery rollback staged");
    Ok(HttpResponse::Ok().json(json!({"file": name, "staged": sha.as_str()})))
}
