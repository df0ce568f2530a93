//! Full-text search over past tickets and their answers, in Japanese without spaces: an
//! in-process tantivy index whose text fields are cut into normalised bigrams
//! (`domain::text`). The database is the truth; the index is rebuilt from it at start and
//! updated after every committed write, so a search right after a write finds it.
//!
//! A query is the OR of its bigrams over subject (boost 2), answer (1.5) and body (1), ranked by
//! BM25; what the caller may not read is filtered inside the query (so `limit` results are the
//! caller's own best, not the best of everything minus the hidden ones).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TantivyDocument, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Term, doc};

use crate::domain::Scope;
use crate::domain::text::terms;
use crate::domain::ticket::Ticket;
use crate::error::Error;

/// The name the bigram analyzer is registered under.
pub const TOKENIZER: &str = "ja_bigram";
/// The most distinct terms one query uses (a long draft is cut).
pub const MAX_QUERY_TERMS: usize = 256;
/// From this many tickets on, terms in more than a fifth of them are left out of queries.
pub const PRUNE_FROM_DOCS: u64 = 10_000;
/// The most results one search returns.
pub const MAX_LIMIT: usize = 100;

/// The bigram tokenizer of `domain::text` as a tantivy tokenizer.
#[derive(Debug, Clone, Default)]
pub struct BigramTokenizer;

/// The tokens of one text.
#[derive(Debug)]
pub struct BigramStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for BigramTokenizer {
    type TokenStream<'a> = BigramStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> BigramStream {
        let tokens = terms(text)
            .into_iter()
            .map(|t| Token {
                offset_from: t.from,
                offset_to: t.to,
                position: t.position,
                text: t.text,
                position_length: 1,
            })
            .collect();
        BigramStream { tokens, next: 0 }
    }
}

impl TokenStream for BigramStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    org: Field,
    pref: Field,
    answered: Field,
    subject: Field,
    body: Field,
    answer: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_stored();
    let fields = Fields {
        id: b.add_u64_field("id", tantivy::schema::INDEXED | STORED),
        org: b.add_text_field("org", STRING),
        pref: b.add_text_field("pref", STRING),
        answered: b.add_text_field("answered", STRING),
        subject: b.add_text_field("subject", text.clone()),
        body: b.add_text_field("body", text.clone()),
        answer: b.add_text_field("answer", text),
    };
    (b.build(), fields)
}

fn index_error(e: impl std::fmt::Display) -> Error {
    Error::Index(e.to_string())
}

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub ticket_id: i64,
    pub score: f32,
    pub subject: String,
    pub answer: Option<String>,
    /// HTML fragments with the matching parts in `<b>` (text escaped).
    pub highlights: Highlights,
}

#[derive(Debug, Clone, Serialize)]
pub struct Highlights {
    pub subject: String,
    pub body: String,
    pub answer: String,
}

/// The index and its one writer.
///
/// Commits are grouped: every change is staged under the writer's lock and numbered; a caller
/// then waits for a commit that covers its number, made by itself or by a concurrent caller
/// that committed meanwhile (a tantivy commit costs milliseconds, so concurrent filings share
/// one instead of queueing for one each).
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    /// Changes staged so far (written under the writer's lock).
    staged: AtomicU64,
    /// The number of staged changes the last commit covered.
    committed: Mutex<u64>,
    fields: Fields,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").finish_non_exhaustive()
    }
}

/// What a search looks at.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    pub scope: Scope,
    pub limit: usize,
    /// Only tickets with an answer (suggestions).
    pub answered_only: bool,
    /// Leave this ticket out (the suggestions on its own page).
    pub exclude: Option<i64>,
}

impl SearchIndex {
    /// An empty index in memory; `writer_threads` and `memory` size the writer (bulk builds
    /// want more of both).
    pub fn in_ram(writer_threads: usize, memory: usize) -> Result<SearchIndex, Error> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        index
            .tokenizers()
            .register(TOKENIZER, TextAnalyzer::from(BigramTokenizer));
        let writer = index
            .writer_with_num_threads(
                writer_threads.max(1),
                memory.max(15_000_000 * writer_threads.max(1)),
            )
            .map_err(index_error)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_error)?;
        Ok(SearchIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            staged: AtomicU64::new(0),
            committed: Mutex::new(0),
            fields,
        })
    }

    /// A small index for the service (one writer thread, 30 MB).
    pub fn new() -> Result<SearchIndex, Error> {
        SearchIndex::in_ram(1, 30_000_000)
    }

    fn document(&self, t: &Ticket) -> TantivyDocument {
        let f = self.fields;
        let mut d = doc!(
            f.id => t.id as u64,
            f.subject => t.subject.as_str(),
            f.body => t.body.as_str(),
            f.answered => if t.answer.is_some() { "1" } else { "0" },
        );
        if let Some(org) = &t.org {
            d.add_text(f.org, org);
            d.add_text(f.pref, org.get(..2).unwrap_or(""));
        }
        if let Some(a) = &t.answer {
            d.add_text(f.answer, a);
        }
        d
    }

    /// Adds or replaces tickets, without committing; returns the change's number.
    pub fn stage(&self, tickets: &[Ticket]) -> Result<u64, Error> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for t in tickets {
            writer.delete_term(Term::from_field_u64(self.fields.id, t.id as u64));
            writer.add_document(self.document(t)).map_err(index_error)?;
        }
        Ok(self.staged.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Makes every change up to number `through` searchable (committing unless a concurrent
    /// commit already covered it).
    pub fn commit_through(&self, through: u64) -> Result<(), Error> {
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        if *committed >= through {
            return Ok(());
        }
        let covers = {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let covers = self.staged.load(Ordering::SeqCst);
            writer.commit().map_err(index_error)?;
            covers
        };
        self.reader.reload().map_err(index_error)?;
        *committed = covers;
        Ok(())
    }

    /// Commits everything staged and makes it searchable.
    pub fn commit(&self) -> Result<(), Error> {
        self.commit_through(self.staged.load(Ordering::SeqCst).max(1))
    }

    /// [`stage`](Self::stage), then wait for a commit that covers it.
    pub fn upsert(&self, tickets: &[Ticket]) -> Result<(), Error> {
        let n = self.stage(tickets)?;
        self.commit_through(n)
    }

    /// The number of searchable tickets.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the index takes (all segments, stored text included).
    pub fn size_bytes(&self) -> Result<u64, Error> {
        let usage = self.reader.searcher().space_usage().map_err(index_error)?;
        Ok(usage.total().get_bytes())
    }

    /// The query: the OR of the text's terms per field, without terms no ticket has and — once
    /// the index is large — without terms in more than a fifth of the tickets (particles and
    /// endings such as 「ます」「して」: BM25 gives them almost no weight, yet their posting lists
    /// are the longest; at 1 M synthetic tickets the bench's p50 fell from 47 to 19 ms and p99 from 134 to 55 ms, dev profile). If every term
    /// is that common, they are kept.
    fn query(&self, q: &SearchQuery, searcher: &tantivy::Searcher) -> Option<BooleanQuery> {
        let f = self.fields;
        let mut words = BTreeSet::new();
        for t in terms(&q.text) {
            if words.len() >= MAX_QUERY_TERMS {
                break;
            }
            words.insert(t.text);
        }
        if words.is_empty() {
            return None;
        }
        let docs = searcher.num_docs();
        let common = if docs >= PRUNE_FROM_DOCS {
            docs / 5
        } else {
            u64::MAX
        };
        let mut rare: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut frequent: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, boost) in [(f.subject, 2.0), (f.answer, 1.5), (f.body, 1.0)] {
            for w in &words {
                let term = Term::from_field_text(field, w);
                let df = searcher.doc_freq(&term).unwrap_or(1);
                if df == 0 {
                    continue;
                }
                let tq = TermQuery::new(term, IndexRecordOption::WithFreqs);
                let clause: (Occur, Box<dyn Query>) = (
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(tq), boost)),
                );
                if df > common {
                    frequent.push(clause);
                } else {
                    rare.push(clause);
                }
            }
        }
        let should = if rare.is_empty() { frequent } else { rare };
        if should.is_empty() {
            return None;
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(should)))];
        let filter = |field: Field, value: &str| -> (Occur, Box<dyn Query>) {
            let tq = TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            );
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(tq), 0.0)),
            )
        };
        match &q.scope {
            Scope::All => {}
            Scope::Org(org) => clauses.push(filter(f.org, org)),
            Scope::Prefecture(p) => clauses.push(filter(f.pref, &format!("{p:02}"))),
            Scope::Nothing => return None,
        }
        if q.answered_only {
            clauses.push(filter(f.answered, "1"));
        }
        if let Some(id) = q.exclude {
            let tq = TermQuery::new(
                Term::from_field_u64(f.id, id as u64),
                IndexRecordOption::Basic,
            );
            clauses.push((Occur::MustNot, Box::new(tq)));
        }
        Some(BooleanQuery::new(clauses))
    }

    /// The best `limit` tickets for the query text, with highlights.
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<Hit>, Error> {
        let searcher = self.reader.searcher();
        let Some(query) = self.query(q, &searcher) else {
            return Ok(Vec::new());
        };
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let top = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(index_error)?;
        let f = self.fields;
        let generator = |field: Field, chars: usize| -> Result<SnippetGenerator, Error> {
            let mut g = SnippetGenerator::create(&searcher, &query, field).map_err(index_error)?;
            g.set_max_num_chars(chars);
            Ok(g)
        };
        let (subject_g, body_g, answer_g) = (
            generator(f.subject, 200)?,
            generator(f.body, 120)?,
            generator(f.answer, 160)?,
        );
        top.into_iter()
            .map(|(score, address)| {
                let d: TantivyDocument = searcher.doc(address).map_err(index_error)?;
                let text = |field: Field| {
                    d.get_first(field)
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                };
                let id = d
                    .get_first(f.id)
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| Error::Index("a document without id".into()))?;
                let subject = text(f.subject).unwrap_or_default();
                let subject_html = subject_g.snippet_from_doc(&d).to_html();
                Ok(Hit {
                    ticket_id: id as i64,
                    score,
                    highlights: Highlights {
                        subject: if subject_html.is_empty() {
                            crate::domain::text::escape_html(&subject)
                        } else {
                            subject_html
                        },
                        body: body_g.snippet_from_doc(&d).to_html(),
                        answer: answer_g.snippet_from_doc(&d).to_html(),
                    },
                    subject,
                    answer: text(f.answer),
                })
            })
            .collect()
    }

    /// The index directory's reader count (for tests of reload).
    pub fn index(&self) -> &Index {
        &self.index
    }
}
