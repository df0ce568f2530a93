//! Check digits of the public codes jukinet handles.
//!
//! - 個人番号 (individual number, 12 digits): weights 6,5,4,3,2,7,6,5,4,3,2 on the first 11
//!   digits; r = Σ mod 11; check digit 0 if r ≤ 1, else 11 − r.
//! - 地方公共団体コード (local government code, 6 digits): weights 6,5,4,3,2 on the first 5
//!   digits; r = Σ mod 11; check digit (11 − r) mod 10. The first two digits are the prefecture
//!   code, 01–47.
//! - 住民票コード (resident-record code, 11 digits): the check digit is set by a ministerial notice
//!   whose text is not public. **Assumption:** the same mod-11 family as the individual number,
//!   weights 5,4,3,2,7,6,5,4,3,2 on the first 10 digits. Only [`resident_record_check_digit`]
//!   encodes it, so a correction changes one function.

use thiserror::Error;

/// Why a code was refused. The message names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodeError {
    #[error("must be exactly {expected} ASCII digits, got {got:?}")]
    Format { expected: usize, got: String },
    #[error("check digit is {got}, expected {expected}")]
    CheckDigit { expected: u8, got: u8 },
    #[error("prefecture code {0:02} is outside 01–47")]
    Prefecture(u8),
}

fn digits<const N: usize>(code: &str) -> Result<[u8; N], CodeError> {
    let bytes = code.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(CodeError::Format {
            expected: N,
            got: code.to_owned(),
        });
    }
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = b - b'0';
    }
    Ok(out)
}

fn weighted_sum(digits: &[u8], weights: &[u32]) -> u32 {
    digits
        .iter()
        .zip(weights)
        .map(|(&d, &w)| u32::from(d) * w)
        .sum()
}

fn check(expected: u8, got: u8) -> Result<(), CodeError> {
    if expected == got {
        Ok(())
    } else {
        Err(CodeError::CheckDigit { expected, got })
    }
}

/// Check digit of a 12-digit individual number (個人番号) from its first 11 digits.
pub fn individual_number_check_digit(first11: &[u8; 11]) -> u8 {
    let r = weighted_sum(first11, &[6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) % 11;
    if r <= 1 { 0 } else { (11 - r) as u8 }
}

/// Check digit of a 6-digit local government code (地方公共団体コード) from its first 5 digits.
pub fn municipality_check_digit(first5: &[u8; 5]) -> u8 {
    let r = weighted_sum(first5, &[6, 5, 4, 3, 2]) % 11;
    ((11 - r) % 10) as u8
}

/// Check digit of an 11-digit resident-record code (住民票コード) from its first 10 digits.
/// An assumption: see the crate documentation.
pub fn resident_record_check_digit(first10: &[u8; 10]) -> u8 {
    let r = weighted_sum(first10, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) % 11;
    if r <= 1 { 0 } else { (11 - r) as u8 }
}

/// Validates a 12-digit individual number.
pub fn validate_individual_number(code: &str) -> Result<(), CodeError> {
    let d = digits::<12>(code)?;
    check(
        individual_number_check_digit(d[..11].try_into().unwrap()),
        d[11],
    )
}

/// Validates an 11-digit resident-record code.
pub fn validate_resident_record_code(code: &str) -> Result<(), CodeError> {
    let d = digits::<11>(code)?;
    check(
        resident_record_check_digit(d[..10].try_into().unwrap()),
        d[10],
    )
}

/// Validates a 6-digit local government code and returns its prefecture code.
pub fn validate_municipality_code(code: &str) -> Result<u8, CodeError> {
    let d = digits::<6>(code)?;
    let prefecture = d[0] * 10 + d[1];
    if !(1..=47).contains(&prefecture) {
        return Err(CodeError::Prefecture(prefecture));
    }
    check(municipality_check_digit(d[..5].try_into().unwrap()), d[5])?;
    Ok(prefecture)
}

/// Validates a 2-digit prefecture code ("01"–"47") and returns it as a number.
pub fn validate_prefecture_code(code: &str) -> Result<u8, CodeError> {
    let d = digits::<2>(code)?;
    let prefecture = d[0] * 10 + d[1];
    if (1..=47).contains(&prefecture) {
        Ok(prefecture)
    } else {
        Err(CodeError::Prefecture(prefecture))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn design_examples_of_individual_numbers_are_valid() {
        assert_eq!(validate_individual_number("123456789018"), Ok(()));
        assert_eq!(validate_individual_number("983205673214"), Ok(()));
        assert_eq!(
            validate_individual_number("123456789012"),
            Err(CodeError::CheckDigit {
                expected: 8,
                got: 2
            })
        );
    }

    #[test]
    fn design_examples_of_municipality_codes_are_valid() {
        assert_eq!(validate_municipality_code("131016"), Ok(13)); // Chiyoda
        assert_eq!(validate_municipality_code("011002"), Ok(1)); // Sapporo
        assert_eq!(
            validate_municipality_code("131017"),
            Err(CodeError::CheckDigit {
                expected: 6,
                got: 7
            })
        );
        assert_eq!(
            validate_municipality_code("481009"),
            Err(CodeError::Prefecture(48))
        );
    }

    #[test]
    fn malformed_codes_name_the_length_rule() {
        for bad in ["", "12345", "1310166", "13101a", "１３１０１６"] {
            let err = validate_municipality_code(bad).unwrap_err();
            assert!(
                matches!(err, CodeError::Format { expected: 6, .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("6 ASCII digits"));
        }
        assert!(matches!(
            validate_resident_record_code("1234"),
            Err(CodeError::Format { expected: 11, .. })
        ));
    }

    #[test]
    fn every_code_in_the_official_list_passes() {
        let csv = include_str!("../../data/municipalities.csv");
        let mut rows = 0;
        for line in csv.lines().skip(1) {
            let code = line.split(',').next().unwrap();
            let pref: u8 = code[..2].parse().unwrap();
            assert_eq!(validate_municipality_code(code), Ok(pref), "{line}");
            rows += 1;
        }
        assert!(rows > 1900, "the list has every municipality, got {rows}");
    }

    proptest! {
        #[test]
        fn exactly_one_check_digit_fits_an_individual_number(first in prop::array::uniform11(0u8..10)) {
            let valid: Vec<u8> = (0..10u8).filter(|cd| {
                let s: String = first.iter().chain(std::iter::once(cd)).map(|d| char::from(b'0' + d)).collect();
                validate_individual_number(&s).is_ok()
            }).collect();
            prop_assert_eq!(valid, vec![individual_number_check_digit(&first)]);
        }

        #[test]
        fn a_single_digit_change_in_a_resident_record_code_is_caught(
            first in prop::array::uniform10(0u8..10), pos in 0usize..10, delta in 1u8..10,
        ) {
            let cd = resident_record_check_digit(&first);
            let mut changed = first;
            changed[pos] = (changed[pos] + delta) % 10;
            let s: String = changed.iter().chain(std::iter::once(&cd)).map(|d| char::from(b'0' + d)).collect();
            // Weights 2..7 are all coprime to 11, so a single substitution moves the residue.
            // The only escape is the r ∈ {0, 1} → 0 fold of the check digit.
            let r = |d: &[u8; 10]| weighted_sum(d, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) % 11;
            if r(&first) > 1 || r(&changed) > 1 {
                prop_assert!(validate_resident_record_code(&s).is_err());
            }
        }
    }
}
