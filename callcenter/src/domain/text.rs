//! Japanese text for search: normalisation and bigram terms, with offsets into the original
//! text (so that highlights mark what the user wrote).
//!
//! Normalisation: NFKC (full-width ASCII → ASCII, half-width katakana → katakana, including a
//! half-width voiced mark joining the character before it), katakana → hiragana, lowercase.
//! Terms: a run of Japanese characters (kana, kanji, ー, 々) gives its overlapping bigrams (a
//! one-character run gives itself); a run of other letters and digits gives one word. Everything
//! else separates. So 「ｼｽﾃﾑ障害」, 「システム障害」 and 「しすてむ障害」 give the same terms.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::compose;

/// One normalised character and the byte range of the original character(s) it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormChar {
    pub c: char,
    pub from: usize,
    pub to: usize,
}

fn fold(c: char) -> char {
    match c {
        // Katakana ァ..ヶ → hiragana ぁ..ゖ; ヽヾ → ゝゞ.
        '\u{30A1}'..='\u{30F6}' | '\u{30FD}' | '\u{30FE}' => {
            char::from_u32(u32::from(c) - 0x60).unwrap_or(c)
        }
        c => c.to_lowercase().next().unwrap_or(c),
    }
}

/// The normalised characters of `text` with their original byte ranges.
pub fn normalize_with_offsets(text: &str) -> Vec<NormChar> {
    let mut out: Vec<NormChar> = Vec::with_capacity(text.len() / 2);
    for (from, original) in text.char_indices() {
        let to = from + original.len_utf8();
        for c in original.nfkc() {
            // A voiced or semi-voiced mark (from a half-width ﾞ/ﾟ) joins the character before.
            if matches!(c, '\u{3099}' | '\u{309A}')
                && let Some(last) = out.last_mut()
                && let Some(joined) = compose(last.c, c)
            {
                last.c = joined;
                last.to = to;
                continue;
            }
            out.push(NormChar { c, from, to });
        }
    }
    for n in &mut out {
        n.c = fold(n.c);
    }
    out
}

/// `text` normalised.
pub fn normalize(text: &str) -> String {
    normalize_with_offsets(text)
        .into_iter()
        .map(|n| n.c)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Japanese,
    Word,
    Separator,
}

fn class(c: char) -> Class {
    match c {
        '\u{3041}'..='\u{309F}'
        | '\u{30A0}'..='\u{30FF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{3005}' => Class::Japanese,
        c if c.is_alphanumeric() => Class::Word,
        _ => Class::Separator,
    }
}

/// One search term with the byte range of the original text it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub text: String,
    pub from: usize,
    pub to: usize,
    /// Its position among the terms (for phrase queries and highlights).
    pub position: usize,
}

/// The longest word term, in characters (longer runs are cut).
const MAX_WORD: usize = 40;

/// The terms of `text`.
pub fn terms(text: &str) -> Vec<Term> {
    let chars = normalize_with_offsets(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let cls = class(chars[i].c);
        let mut j = i + 1;
        while j < chars.len() && class(chars[j].c) == cls {
            j += 1;
        }
        let run = &chars[i..j];
        match cls {
            Class::Separator => {}
            Class::Word => {
                for chunk in run.chunks(MAX_WORD) {
                    out.push(Term {
                        text: chunk.iter().map(|n| n.c).collect(),
                        from: chunk[0].from,
                        to: chunk[chunk.len() - 1].to,
                        position: out.len(),
                    });
                }
            }
            Class::Japanese if run.len() == 1 => out.push(Term {
                text: run[0].c.to_string(),
                from: run[0].from,
                to: run[0].to,
                position: out.len(),
            }),
            Class::Japanese => {
                for pair in run.windows(2) {
                    out.push(Term {
                        text: [pair[0].c, pair[1].c].iter().collect(),
                        from: pair[0].from,
                        to: pair[1].to,
                        position: out.len(),
                    });
                }
            }
        }
        i = j;
    }
    out
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped for HTML.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        terms(s).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn width_and_kana_variants_give_the_same_terms() {
        let want = texts("システム障害");
        assert_eq!(want, ["しす", "すて", "てむ", "む障", "障害"]);
        assert_eq!(texts("ｼｽﾃﾑ障害"), want);
        assert_eq!(texts("しすてむ障害"), want);
        assert_eq!(texts("ﾃﾞｰﾀ"), texts("データ"));
        assert_eq!(texts("ﾊﾟｽﾜｰﾄﾞ"), texts("パスワード"));
        assert_eq!(texts("ＣＳ　ＴＬＳ１"), ["cs", "tls1"]);
    }

    #[test]
    fn offsets_point_into_the_original_text() {
        let s = "ｶﾞｲﾄﾞ読込";
        for t in terms(s) {
            assert!(s.is_char_boundary(t.from) && s.is_char_boundary(t.to));
        }
        let t = terms(s);
        assert_eq!(&s[t[0].from..t[0].to], "ｶﾞｲ");
        assert_eq!(&s[t.last().unwrap().from..t.last().unwrap().to], "読込");
        assert_eq!(texts("の"), ["の"]);
        assert!(terms("、。！？ ").is_empty());
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let mut x: u32 = 1;
        for _ in 0..500 {
            let s: String = (0..40)
                .filter_map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    char::from_u32((x >> 8) % 0x1_0000)
                })
                .collect();
            for t in terms(&s) {
                assert!(t.from < t.to && t.to <= s.len());
            }
        }
    }
}
