//! The web UI for the call-center staff and the administrators, in Japanese, rendered on the
//! server: a ticket list with filters, a ticket page (history, service level, answer and state
//! forms, suggested past answers), a form for phone/FAX entries with suggestions while typing,
//! and search. Everything works without JavaScript; one small inline script refreshes the
//! suggestions while a draft is typed (no build step).

use std::fmt::Write as _;

use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, LOCATION};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use jiff::Timestamp;
use serde::Deserialize;

use super::AppState;
use super::auth::{AuthMode, Authed, IDENTITY_COOKIE};
use crate::domain::sla::{Sla, SlaStatus};
use crate::domain::text::escape_html as esc;
use crate::domain::ticket::{StateInput, Ticket, TicketInput};
use crate::domain::{Caller, Channel, Kind, State};
use crate::error::Error;
use crate::search::Hit;
use crate::service::{CallCenter, ListRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/ui/style.css", web::get().to(style))
        .route("/ui/login", web::get().to(login))
        .route("/ui/tickets", web::get().to(list))
        .route("/ui/tickets", web::post().to(file))
        .route("/ui/tickets/new", web::get().to(new_form))
        .route("/ui/tickets/{id}", web::get().to(page))
        .route("/ui/tickets/{id}/answer", web::post().to(answer))
        .route("/ui/tickets/{id}/state", web::post().to(state))
        .route("/ui/search", web::get().to(search))
        .route("/ui/suggest", web::get().to(suggest));
}

/// An error shown as an HTML page with the same status.
#[derive(Debug)]
pub struct UiError(Error);

impl From<Error> for UiError {
    fn from(e: Error) -> Self {
        UiError(e)
    }
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let _ = self.0.error_response(); // logs 5xx
        let body = format!(
            "<section class=\"error\"><h2>エラー ({})</h2><p>{}</p><p class=\"muted\">{}{}</p><p><a href=\"javascript:history.back()\">戻る</a> ・ <a href=\"/ui/tickets\">一覧へ</a></p></section>",
            self.status_code().as_u16(),
            esc(&self.0.body().message),
            esc(self.0.tag()),
            self.0
                .field_name()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        );
        HttpResponse::build(self.status_code())
            .content_type(ContentType::html())
            .body(layout("エラー", None, &body))
    }
}

type UiResult = Result<HttpResponse, UiError>;

/// Refuses a form post that a browser sent from another site (client certificates, like
/// cookies, go with cross-site requests): `Sec-Fetch-Site` must be same-origin (or none, typed
/// by the user), and an `Origin`, when sent, must be this host.
fn same_origin(req: &HttpRequest) -> Result<(), Error> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let refused = |why: String| Error::Forbidden {
        rule: "cross_site",
        message: format!("form posts must come from this site's own pages ({why})"),
    };
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused(format!("Sec-Fetch-Site {site:?}")));
    }
    if let (Some(origin), Some(host)) = (header("origin"), header("host")) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Err(refused(format!("Origin {origin:?}")));
        }
    }
    Ok(())
}

/// The page a browser gets for a 401 on a UI route (other routes keep the JSON body).
pub fn unauthenticated(req: &ServiceRequest, e: &Error) -> Option<HttpResponse> {
    if !req.path().starts_with("/ui/") && req.path() != "/" {
        return None;
    }
    let body = format!(
        "<section class=\"error\"><h2>認証が必要です</h2><p>{}</p><p>クライアント証明書で接続してください。開発モードでは <a href=\"/ui/login\">ログイン</a> で利用者を選べます。</p></section>",
        esc(&e.to_string())
    );
    Some(
        HttpResponse::Unauthorized()
            .content_type(ContentType::html())
            .body(layout("認証が必要です", None, &body)),
    )
}

const STYLE: &str = r#"
body{font-family:"Noto Sans CJK JP","Noto Sans JP",sans-serif;margin:0;background:#f4f6f8;color:#1d2430}
header{background:#16355c;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.4rem;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:bold}header .who{margin-left:auto;font-size:.85rem;opacity:.85}
main{padding:1rem 1.4rem;max-width:1100px}
table{border-collapse:collapse;width:100%;background:#fff}th,td{border-bottom:1px solid #d8dde3;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#e8edf2;font-size:.9rem}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;font-size:.8rem;background:#dfe6ee}
.sla-near{background:#ffe08a}.sla-breached,.sla-missed{background:#f5a3a3}.sla-met{background:#b9e4c3}
.state-closed{background:#cfd4da}.state-received{background:#cfe3ff}
form.card,section.card{background:#fff;padding:1rem;border:1px solid #d8dde3;margin:.8rem 0}
label{display:block;margin:.4rem 0 .1rem;font-weight:bold;font-size:.9rem}
input[type=text],select,textarea{width:100%;box-sizing:border-box;padding:.35rem;font:inherit}
textarea{min-height:6rem}button{padding:.4rem 1rem;font:inherit;background:#16355c;color:#fff;border:0;border-radius:.2rem;cursor:pointer}
.grid{display:grid;grid-template-columns:3fr 2fr;gap:1rem}.muted{color:#667}
.hit{background:#fff;border:1px solid #d8dde3;padding:.6rem;margin:.5rem 0}.hit b{background:#fff3a0}
.answer{white-space:pre-wrap;background:#f0f7f0;padding:.6rem;border-left:4px solid #4a9a5a}
.body{white-space:pre-wrap}.error{background:#fff;border-left:4px solid #c33;padding:1rem}
.filters{display:flex;gap:.6rem;align-items:end}.filters>div{flex:1}
"#;

fn layout(title: &str, caller: Option<&Caller>, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>{} - jukinet コールセンター</title>\
         <link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body><header><span>jukinet コールセンター</span>\
         <a href=\"/ui/tickets\">受付一覧</a><a href=\"/ui/tickets/new\">新規受付</a><a href=\"/ui/search\">過去回答検索</a>\
         <span class=\"who\">{}</span></header><main><h1>{}</h1>{}</main></body></html>",
        esc(title),
        caller
            .map(|c| format!("利用者: {}", esc(&c.name())))
            .unwrap_or_default(),
        esc(title),
        body
    )
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(body)
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

fn tokyo(cc: &CallCenter, t: Timestamp) -> String {
    t.to_zoned(cc.calendar.time_zone().clone())
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}

fn sla_badge(sla: &Sla) -> String {
    let class = match sla.status {
        SlaStatus::Met => "sla-met",
        SlaStatus::Missed => "sla-missed",
        SlaStatus::Ok => "sla-ok",
        SlaStatus::Near => "sla-near",
        SlaStatus::Breached => "sla-breached",
    };
    let left = sla
        .remaining_seconds
        .map(|s| format!(" 残り{}分", s / 60))
        .unwrap_or_default();
    format!(
        "<span class=\"badge {class}\" data-sla=\"{}\">{}{}</span>",
        serde_json::to_value(sla.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        sla.status.label(),
        left
    )
}

fn state_badge(s: State) -> String {
    format!(
        "<span class=\"badge state-{}\">{}</span>",
        s.as_str(),
        s.label()
    )
}

async fn root() -> HttpResponse {
    see_other("/ui/tickets")
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(rename = "as")]
    who: Option<String>,
}

/// Development mode only: pick an identity (a cookie).
async fn login(state: web::Data<AppState>, q: web::Query<LoginQuery>) -> UiResult {
    if !matches!(state.auth, AuthMode::Development { .. }) {
        return Err(Error::NotFound("route GET /ui/login (development mode only)".into()).into());
    }
    if let Some(who) = q.who.as_deref() {
        let caller = Caller::parse(who).ok_or_else(|| {
            Error::field(
                "as",
                "invalid_identity",
                format!("{who:?} is not a call-center identity"),
            )
        })?;
        return Ok(HttpResponse::SeeOther()
            .insert_header((LOCATION, "/ui/tickets"))
            .insert_header((
                actix_web::http::header::SET_COOKIE,
                format!(
                    "{IDENTITY_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                    caller.name()
                ),
            ))
            .finish());
    }
    let mut body =
        String::from("<section class=\"card\"><p>開発モード: 利用者を選んでください。</p><ul>");
    for who in ["callcenter-dev", "sysmgmt-dev", "muni-131016", "pref-13"] {
        let _ = write!(body, "<li><a href=\"/ui/login?as={who}\">{who}</a></li>");
    }
    body.push_str("</ul></section>");
    Ok(html(layout("ログイン", None, &body)))
}

#[derive(Debug, Deserialize)]
struct ListForm {
    org: Option<String>,
    state: Option<String>,
    kind: Option<String>,
}

fn options<T: Copy>(
    all: &[T],
    selected: Option<&str>,
    value: fn(T) -> &'static str,
    label: fn(T) -> &'static str,
) -> String {
    let mut out = String::from("<option value=\"\">すべて</option>");
    for &x in all {
        let v = value(x);
        let _ = write!(
            out,
            "<option value=\"{v}\"{}>{}</option>",
            if selected == Some(v) { " selected" } else { "" },
            label(x)
        );
    }
    out
}

async fn list(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    q: web::Query<ListForm>,
) -> UiResult {
    let cc = &state.cc;
    let q = q.into_inner();
    let tickets = cc
        .list(
            &caller,
            ListRequest {
                org: q.org.clone(),
                state: q.state.clone(),
                kind: q.kind.clone(),
                before: None,
                limit: Some(200),
            },
        )
        .await?;
    let mut body = format!(
        "<form class=\"card filters\" method=\"get\" action=\"/ui/tickets\">\
         <div><label for=\"f-state\">状態</label><select id=\"f-state\" name=\"state\">{}</select></div>\
         <div><label for=\"f-kind\">種別</label><select id=\"f-kind\" name=\"kind\">{}</select></div>\
         <div><label for=\"f-org\">団体コード</label><input type=\"text\" id=\"f-org\" name=\"org\" value=\"{}\"></div>\
         <div><button type=\"submit\">絞り込み</button></div></form>",
        options(State::ALL, q.state.as_deref(), State::as_str, State::label),
        options(Kind::ALL, q.kind.as_deref(), Kind::as_str, Kind::label),
        esc(q.org.as_deref().unwrap_or(""))
    );
    body.push_str("<table id=\"tickets\"><thead><tr><th>番号</th><th>種別</th><th>状態</th><th>団体</th><th>件名</th><th>受付</th><th>初回回答目標</th></tr></thead><tbody>");
    for t in &tickets {
        let _ = write!(
            body,
            "<tr><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/ui/tickets/{id}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            t.ticket.kind.label(),
            state_badge(t.ticket.state),
            esc(t.ticket.org.as_deref().unwrap_or("—")),
            esc(&t.ticket.subject),
            tokyo(cc, t.ticket.created_at),
            sla_badge(&t.sla),
            id = t.ticket.id,
        );
    }
    if tickets.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"muted\">該当する受付はありません。</td></tr>");
    }
    body.push_str("</tbody></table>");
    Ok(html(layout("受付一覧", Some(&caller), &body)))
}

fn hits_html(hits: &[Hit], empty: &str) -> String {
    if hits.is_empty() {
        return format!("<p class=\"muted\">{empty}</p>");
    }
    let mut out = String::new();
    for h in hits {
        let _ = write!(
            out,
            "<div class=\"hit\" data-ticket=\"{id}\"><a href=\"/ui/tickets/{id}\">#{id} {}</a> <span class=\"muted\">score {:.2}</span>{}{}</div>",
            h.highlights.subject,
            h.score,
            if h.highlights.body.is_empty() {
                String::new()
            } else {
                format!("<div class=\"muted\">{}</div>", h.highlights.body)
            },
            match (&h.answer, h.highlights.answer.is_empty()) {
                (Some(_), false) => format!("<div class=\"answer\">{}</div>", h.highlights.answer),
                (Some(a), true) => format!(
                    "<div class=\"answer\">{}</div>",
                    esc(&a.chars().take(160).collect::<String>())
                ),
                (None, _) => String::new(),
            },
            id = h.ticket_id,
        );
    }
    out
}

#[derive(Debug, Deserialize)]
struct DraftQuery {
    subject: Option<String>,
    body: Option<String>,
}

const SUGGEST_SCRIPT: &str = r#"<script>
(function(){var s=document.getElementById('subject'),b=document.getElementById('body'),p=document.getElementById('suggestions'),t;
function go(){var q=(s.value+' '+b.value).trim();if(!q){return;}
fetch('/ui/suggest?text='+encodeURIComponent(q),{credentials:'same-origin'}).then(function(r){return r.text();}).then(function(h){p.innerHTML=h;});}
function later(){clearTimeout(t);t=setTimeout(go,300);}s.addEventListener('input',later);b.addEventListener('input',later);})();
</script>"#;

async fn new_form(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    q: web::Query<DraftQuery>,
) -> UiResult {
    let cc = &state.cc;
    let subject = q.subject.clone().unwrap_or_default();
    let draft_body = q.body.clone().unwrap_or_default();
    let draft = format!("{subject} {draft_body}");
    let suggestions = if draft.trim().is_empty() {
        "<p class=\"muted\">件名や内容を入力すると、似た過去の回答がここに表示されます。</p>"
            .to_owned()
    } else {
        hits_html(
            &cc.suggest(&caller, &draft, Some(5), None).await?,
            "似た過去の回答はありません。",
        )
    };
    let default_org = match &caller {
        Caller::Municipality(m) => m.clone(),
        Caller::Prefecture(p) => crate::domain::authz::prefecture_org(*p),
        _ => String::new(),
    };
    let channel_default = if caller.is_staff() {
        "phone"
    } else {
        "terminal"
    };
    let body = format!(
        "<div class=\"grid\"><form class=\"card\" method=\"post\" action=\"/ui/tickets\" id=\"new-ticket\">\
         <label for=\"kind\">種別</label><select id=\"kind\" name=\"kind\">{kinds}</select>\
         <label for=\"org\">地方公共団体コード</label><input type=\"text\" id=\"org\" name=\"org\" value=\"{org}\" placeholder=\"例: 131016\">\
         <label for=\"reporter\">連絡者</label><input type=\"text\" id=\"reporter\" name=\"reporter\" placeholder=\"例: 千代田区 住民課 山田\">\
         <label for=\"channel\">受付経路</label><select id=\"channel\" name=\"channel\">{channels}</select>\
         <label for=\"subject\">件名</label><input type=\"text\" id=\"subject\" name=\"subject\" value=\"{subject}\">\
         <label for=\"body\">内容</label><textarea id=\"body\" name=\"body\">{draft_body}</textarea>\
         <label for=\"nodes\">関連ノード (空白区切り)</label><input type=\"text\" id=\"nodes\" name=\"nodes\" placeholder=\"例: cs-131016\">\
         <label for=\"category\">分類</label><input type=\"text\" id=\"category\" name=\"category\">\
         <p><button type=\"submit\" id=\"file\">受付登録</button> \
         <button type=\"submit\" formmethod=\"get\" formaction=\"/ui/tickets/new\">類似回答を表示</button></p></form>\
         <section class=\"card\"><h2>類似の過去回答</h2><div id=\"suggestions\">{suggestions}</div></section></div>{SUGGEST_SCRIPT}",
        kinds = Kind::ALL
            .iter()
            .map(|k| format!("<option value=\"{}\">{}</option>", k.as_str(), k.label()))
            .collect::<String>(),
        channels = Channel::ALL
            .iter()
            .filter(|c| **c != Channel::Alert)
            .map(|c| format!(
                "<option value=\"{v}\"{s}>{l}</option>",
                v = c.as_str(),
                s = if c.as_str() == channel_default {
                    " selected"
                } else {
                    ""
                },
                l = c.label()
            ))
            .collect::<String>(),
        org = esc(&default_org),
        subject = esc(&subject),
        draft_body = esc(&draft_body),
    );
    Ok(html(layout(
        "新規受付 (電話・FAX・端末)",
        Some(&caller),
        &body,
    )))
}

#[derive(Debug, Deserialize)]
struct SuggestQuery {
    text: String,
    exclude: Option<i64>,
}

/// The suggestions panel as an HTML fragment (the inline script of the new-ticket form).
async fn suggest(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    q: web::Query<SuggestQuery>,
) -> UiResult {
    let hits = state
        .cc
        .suggest(&caller, &q.text, Some(5), q.exclude)
        .await?;
    Ok(html(hits_html(&hits, "似た過去の回答はありません。")))
}

#[derive(Debug, Deserialize)]
struct TicketForm {
    kind: String,
    org: String,
    reporter: String,
    channel: String,
    subject: String,
    body: String,
    #[serde(default)]
    nodes: String,
    #[serde(default)]
    category: String,
}

async fn file(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    req: HttpRequest,
    form: web::Form<TicketForm>,
) -> UiResult {
    same_origin(&req)?;
    let f = form.into_inner();
    let input = TicketInput {
        kind: f.kind,
        org: f.org.trim().to_owned(),
        reporter: f.reporter,
        channel: f.channel,
        subject: f.subject,
        body: f.body,
        nodes: f
            .nodes
            .split(|c: char| c.is_whitespace() || c == ',' || c == '、')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        category: Some(f.category),
    };
    let t = state.cc.file(&caller, input).await?;
    Ok(see_other(&format!("/ui/tickets/{}", t.id)))
}

fn ticket_id(raw: &str) -> Result<i64, Error> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        Error::NotFound(format!(
            "ticket {:?}",
            raw.chars().take(40).collect::<String>()
        ))
    })
}

fn staff_forms(t: &Ticket) -> String {
    if t.state == State::Closed {
        return "<p class=\"muted\">この受付は完了しています。</p>".into();
    }
    let mut out = format!(
        "<form class=\"card\" method=\"post\" action=\"/ui/tickets/{id}/answer\" id=\"answer-form\">\
         <label for=\"answer\">回答</label><textarea id=\"answer\" name=\"answer\">{}</textarea>\
         <p><button type=\"submit\" id=\"send-answer\">回答を登録</button></p></form>",
        esc(t.answer.as_deref().unwrap_or("")),
        id = t.id
    );
    let next: Vec<(&str, &str)> = match (t.kind, t.state) {
        (Kind::Inquiry, State::Answered) => vec![("closed", "完了にする")],
        (Kind::Fault, State::Received) => vec![("isolating", "切り分け開始")],
        (Kind::Fault, State::Isolating) => vec![("recovery_arranged", "復旧手配")],
        (Kind::Fault, State::RecoveryArranged) => vec![
            ("recovery_arranged", "手配内容を更新"),
            ("recovered", "復旧を確認"),
        ],
        (Kind::Fault, State::Recovered) => vec![("closed", "完了にする")],
        _ => vec![],
    };
    for (to, label) in next {
        let extra = if to == "recovery_arranged" {
            "<label>ベンダー</label><input type=\"text\" name=\"vendor\"><label>復旧見込み (RFC 3339)</label><input type=\"text\" name=\"expected_at\" placeholder=\"2026-12-07T15:00:00+09:00\">"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<form class=\"card\" method=\"post\" action=\"/ui/tickets/{}/state\"><input type=\"hidden\" name=\"state\" value=\"{to}\">{extra}<button type=\"submit\">{label}</button></form>",
            t.id
        );
    }
    out
}

async fn page(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> UiResult {
    let cc = &state.cc;
    let id = ticket_id(&id)?;
    let d = cc.detail(&caller, id).await?;
    let t = &d.ticket;
    let suggestions = cc
        .suggest(
            &caller,
            &format!("{} {}", t.subject, t.body),
            Some(5),
            Some(t.id),
        )
        .await?;
    let context = node_context_html(cc, &caller, t).await;
    let mut history = String::from(
        "<table id=\"history\"><thead><tr><th>日時</th><th>操作</th><th>担当</th><th>状態</th><th>内容</th></tr></thead><tbody>",
    );
    for h in &d.history {
        let _ = write!(
            history,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td class=\"body\">{}</td></tr>",
            tokyo(cc, h.at),
            esc(&h.action),
            esc(&h.actor),
            h.from_state
                .map(|s| format!("{} → ", s.label()))
                .unwrap_or_default(),
            h.to_state.map(|s| s.label()).unwrap_or(""),
            esc(&match &h.detail {
                serde_json::Value::Object(m) if m.is_empty() => String::new(),
                serde_json::Value::Null => String::new(),
                v => v.to_string().chars().take(300).collect(),
            })
        );
    }
    history.push_str("</tbody></table>");
    let body = format!(
        "<div class=\"grid\"><div><section class=\"card\" id=\"ticket\">\
         <p>{} {} {} ・ 受付経路 {} ・ 団体 {} ・ 連絡者 {}</p>\
         <p class=\"muted\">受付 {} ({}) ・ 関連ノード {}{}</p>\
         <h2>内容</h2><div class=\"body\">{}</div>{}</section>{}{}\
         <h2>履歴</h2>{}</div>\
         <section class=\"card\"><h2>類似の過去回答</h2><div id=\"suggestions\">{}</div></section></div>",
        state_badge(t.state),
        t.kind.label(),
        sla_badge(&d.sla),
        t.channel.label(),
        esc(t.org.as_deref().unwrap_or("—")),
        esc(&t.reporter),
        tokyo(cc, t.created_at),
        esc(&t.filed_by),
        if t.nodes.is_empty() {
            "—".to_owned()
        } else {
            esc(&t.nodes.join(", "))
        },
        match &t.recovery {
            Some(r) => format!(
                " ・ 手配先 {} 復旧見込み {}",
                esc(&r.vendor),
                tokyo(cc, r.expected_at)
            ),
            None => String::new(),
        },
        esc(&t.body),
        t.answer
            .as_deref()
            .map(|a| format!(
                "<h2>回答</h2><div class=\"answer\" id=\"current-answer\">{}</div>",
                esc(a)
            ))
            .unwrap_or_default(),
        if caller.is_staff() {
            staff_forms(t)
        } else {
            String::new()
        },
        context,
        history,
        hits_html(&suggestions, "似た過去の回答はありません。"),
    );
    Ok(html(layout(
        &format!("#{} {}", t.id, t.subject),
        Some(&caller),
        &body,
    )))
}

/// The nodes' phase and batch runs, when the Kubernetes API is configured (its errors are shown,
/// not fatal: the ticket page stays usable when the API is down).
async fn node_context_html(cc: &CallCenter, caller: &Caller, t: &Ticket) -> String {
    if cc.nodes.is_none() || t.nodes.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section class=\"card\" id=\"node-context\"><h2>ノードの状況</h2>");
    match cc.context(caller, t.id).await {
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"muted\">取得できません: {}</p>",
                esc(&e.to_string())
            );
        }
        Ok((_, nodes)) => {
            for n in &nodes {
                node_html(&mut out, n);
            }
        }
    }
    out.push_str("</section>");
    out
}

/// One node's context: phase and why, conditions, batch Jobs, deliveries, its timeline.
fn node_html(out: &mut String, n: &crate::nodes::NodeContext) {
    if !n.found {
        let _ = write!(
            out,
            "<p><b>{}</b>: JukiNode が見つかりません</p>",
            esc(&n.node)
        );
        return;
    }
    let _ = write!(
        out,
        "<p><b>{}</b> ({}) フェーズ {} ({} から, 運用日 {})</p>",
        esc(&n.node),
        esc(n.tier.as_deref().unwrap_or("")),
        esc(n.phase.as_deref().unwrap_or("—")),
        esc(n.phase_since.as_deref().unwrap_or("—")),
        esc(n.operating_date.as_deref().unwrap_or("—"))
    );
    if let Some(reason) = &n.reason {
        let _ = write!(
            out,
            "<p>理由 <b>{}</b>: {}</p>",
            esc(reason),
            esc(n.message.as_deref().unwrap_or(""))
        );
    }
    if let Some(conditions) = n.conditions.as_array() {
        out.push_str("<ul>");
        for c in conditions {
            let field = |k: &str| esc(c.get(k).and_then(|v| v.as_str()).unwrap_or(""));
            let _ = write!(
                out,
                "<li>{}={} {} {}</li>",
                field("type"),
                field("status"),
                field("reason"),
                field("message")
            );
        }
        out.push_str("</ul>");
    }
    if !n.jobs.is_empty() {
        out.push_str("<table><thead><tr><th>バッチ</th><th>運用日</th><th>結果</th><th>開始</th></tr></thead><tbody>");
        for j in &n.jobs {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(j.batch.as_deref().unwrap_or(&j.name)),
                esc(j.operating_date.as_deref().unwrap_or("")),
                esc(&j.outcome),
                esc(j.started.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table>");
    }
    deliveries_html(out, n);
    if !n.events.is_empty() {
        out.push_str("<h3>経過 (イベント)</h3><table><thead><tr><th>時刻</th><th>種別</th><th>理由</th><th>内容</th></tr></thead><tbody>");
        for e in &n.events {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                esc(e.time.as_deref().unwrap_or("")),
                esc(&e.kind),
                esc(&e.reason),
                esc(&e.note),
                if e.count > 1 {
                    format!(" (×{})", e.count)
                } else {
                    String::new()
                }
            );
        }
        out.push_str("</tbody></table>");
    }
}

/// The files delivered to a node and the deliveries that failed on it.
fn deliveries_html(out: &mut String, n: &crate::nodes::NodeContext) {
    if let Some(files) = n.delivered_files.as_array().filter(|f| !f.is_empty()) {
        out.push_str("<h3>配信済みファイル</h3><table><thead><tr><th>ファイル</th><th>sha256</th><th>適用</th></tr></thead><tbody>");
        for f in files {
            let field = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let sha = field("sha256");
            let _ = write!(
                out,
                "<tr><td>{}</td><td title=\"{}\">{}…</td><td>{}</td></tr>",
                esc(field("file")),
                esc(sha),
                esc(&sha.chars().take(12).collect::<String>()),
                esc(field("appliedAt"))
            );
        }
        out.push_str("</tbody></table>");
    }
    if !n.deliveries.is_empty() {
        out.push_str("<h3>配信の問題</h3><ul>");
        for d in &n.deliveries {
            let _ = write!(
                out,
                "<li>{} ({}, {}): {} {}</li>",
                esc(&d.delivery),
                esc(d.file.as_deref().unwrap_or("")),
                esc(d.phase.as_deref().unwrap_or("")),
                esc(&d.state),
                esc(d.message.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</ul>");
    }
}

#[derive(Debug, Deserialize)]
struct AnswerForm {
    answer: String,
}

async fn answer(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
    req: HttpRequest,
    form: web::Form<AnswerForm>,
) -> UiResult {
    same_origin(&req)?;
    let id = ticket_id(&id)?;
    state.cc.answer(&caller, id, &form.answer).await?;
    Ok(see_other(&format!("/ui/tickets/{id}")))
}

#[derive(Debug, Deserialize)]
struct StateForm {
    state: String,
    vendor: Option<String>,
    expected_at: Option<String>,
}

async fn state(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
    req: HttpRequest,
    form: web::Form<StateForm>,
) -> UiResult {
    same_origin(&req)?;
    let id = ticket_id(&id)?;
    let f = form.into_inner();
    state
        .cc
        .set_state(
            &caller,
            id,
            StateInput {
                state: f.state,
                vendor: f.vendor,
                expected_at: f.expected_at,
            },
        )
        .await?;
    Ok(see_other(&format!("/ui/tickets/{id}")))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn search(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    q: web::Query<SearchQuery>,
) -> UiResult {
    let text = q.q.clone().unwrap_or_default();
    let results = if text.trim().is_empty() {
        String::new()
    } else {
        let hits = state.cc.search(&caller, &text, Some(20)).await?;
        format!(
            "<p class=\"muted\">{}件</p><div id=\"results\">{}</div>",
            hits.len(),
            hits_html(&hits, "見つかりませんでした。")
        )
    };
    let body = format!(
        "<form class=\"card filters\" method=\"get\" action=\"/ui/search\"><div><label for=\"q\">検索語 (全角・半角、カタカナ・ひらがなの違いは区別しません)</label>\
         <input type=\"text\" id=\"q\" name=\"q\" value=\"{}\"></div><div><button type=\"submit\" id=\"search-button\">検索</button></div></form>{}",
        esc(&text),
        results
    );
    Ok(html(layout("過去回答検索", Some(&caller), &body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{DeliveryIssue, NodeContext, NodeEvent};
    use serde_json::json;

    #[test]
    fn a_nodes_context_shows_why_its_deliveries_and_its_timeline_escaped() {
        let n = NodeContext {
            node: "cs-131016".into(),
            found: true,
            namespace: Some("p13".into()),
            tier: Some("CS".into()),
            phase: Some("Starting".into()),
            reason: Some("DeliveryNotApplied".into()),
            message: Some("delivery <notice> is required".into()),
            phase_since: None,
            operating_date: None,
            conditions: json!([]),
            last_batch: json!(null),
            jobs: vec![],
            events: vec![NodeEvent {
                time: Some("2026-11-26T07:30:10Z".into()),
                kind: "Warning".into(),
                reason: "DeliveryNotApplied".into(),
                note: "held".into(),
                count: 3,
            }],
            delivered_files: json!([{"file": "code-table", "sha256": "ab".repeat(32), "appliedAt": "t"}]),
            deliveries: vec![DeliveryIssue {
                delivery: "juki-national/allow-list".into(),
                file: Some("allow-list".into()),
                phase: Some("Failed".into()),
                state: "Failed".into(),
                message: Some("refused at its start".into()),
            }],
        };
        let mut out = String::new();
        node_html(&mut out, &n);
        for part in [
            "理由 <b>DeliveryNotApplied</b>: delivery &lt;notice&gt; is required",
            "<td>code-table</td>",
            "ababababab…",
            "juki-national/allow-list (allow-list, Failed): Failed refused at its start",
            "<td>2026-11-26T07:30:10Z</td><td>Warning</td><td>DeliveryNotApplied</td><td>held (×3)</td>",
        ] {
            assert!(out.contains(part), "{part:?} not in {out}");
        }
        let mut missing = String::new();
        node_html(&mut missing, &NodeContext { found: false, ..n });
        assert_eq!(
            missing,
            "<p><b>cs-131016</b>: JukiNode が見つかりません</p>"
        );
    }
}
