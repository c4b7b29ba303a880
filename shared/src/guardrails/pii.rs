//! PII detection: emails, phone numbers, payment card numbers and IBANs.
//!
//! Card numbers count only when the Luhn check passes and IBANs only when the
//! ISO 13616 mod-97 check passes, so random digit runs are rarely reported.
//! Phone numbers need a `+` country code, parentheses or separators, so
//! years, amounts, dates and bare ids are left alone. When two kinds claim
//! overlapping text the more specific one wins (IBAN, then card number, then
//! email, then phone): a card number is never also a phone number.

use super::PiiKind;
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// One match: a kind and its byte range in the scanned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Match {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// Every PII match in `text` of the given kinds (all kinds when `kinds` is
/// empty), in text order, none overlapping. Overlaps are resolved over all
/// kinds before filtering, so asking only for phones never turns a card
/// number into a phone.
pub(super) fn find(text: &str, kinds: &[PiiKind]) -> Vec<Match> {
    // Most specific first: a later candidate that overlaps a kept one is dropped.
    let candidates = ibans(text)
        .into_iter()
        .chain(cards(text))
        .chain(emails(text))
        .chain(phones(text));
    let mut kept: BTreeMap<usize, Match> = BTreeMap::new();
    for c in candidates {
        // Kept matches never overlap, so only the last one starting before
        // `c.end` can reach into `c`.
        let overlaps = kept
            .range(..c.end)
            .next_back()
            .is_some_and(|(_, k)| k.end > c.start);
        if !overlaps {
            kept.insert(c.start, c);
        }
    }
    kept.into_values()
        .filter(|m| kinds.is_empty() || kinds.contains(&m.kind))
        .collect()
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants of this module, covered by its tests.
    Regex::new(pattern).expect("built-in pii pattern compiles")
}

// ---------------------------------------------------------------- email

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"[\w.%+\-]+@\w(?:[\w\-]*\w)?(?:\.\w(?:[\w\-]*\w)?)*\.\p{L}{2,63}"));

fn emails(text: &str) -> Vec<Match> {
    EMAIL
        .find_iter(text)
        .filter_map(|m| {
            // A local part does not start with a dot ("see...bob@x.io").
            let start = m.start() + (m.as_str().len() - m.as_str().trim_start_matches('.').len());
            (!text[start..m.end()].starts_with('@')).then_some(Match {
                kind: PiiKind::Email,
                start,
                end: m.end(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- phone

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        // International: +CC then groups, maybe one in parentheses: +44 (0)20 7946 0958.
        r"\+[0-9]{1,4}(?:[ .\-]?(?:\([0-9]{1,5}\)|[0-9]{1,14})){0,7}",
        // Area code in parentheses: (555) 123-4567.
        r"|\([0-9]{2,5}\)(?:[ .\-]?[0-9]{2,8}){1,4}",
        // National with separators: 555-123-4567, 020 7946 0958, 01.23.45.67.89.
        r"|[0-9]{1,5}(?:[ .\-][0-9]{2,8}){1,5}",
    ))
});

fn phones(text: &str) -> Vec<Match> {
    PHONE
        .find_iter(text)
        .filter(|m| plausible_phone(text, m.start(), m.end()))
        .map(|m| Match {
            kind: PiiKind::Phone,
            start: m.start(),
            end: m.end(),
        })
        .collect()
}

/// Filters the phone pattern's candidates: 7–15 digits, not glued to other
/// words or numbers, and not shaped like a date, a year list, an IP address
/// or an amount with thousands separators.
fn plausible_phone(text: &str, start: usize, end: usize) -> bool {
    let s = &text[start..end];
    if let Some(c) = text[..start].chars().next_back() {
        if c.is_alphanumeric() || "_.-/+,".contains(c) {
            return false;
        }
    }
    let mut after = text[end..].chars();
    match (after.next(), after.next()) {
        (Some(c), _) if c.is_alphanumeric() || c == '_' => return false,
        (Some(c), Some(d)) if ".-/,".contains(c) && d.is_ascii_digit() => return false,
        _ => {}
    }
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    if !(7..=15).contains(&digits) {
        return false;
    }
    if s.starts_with('+') || s.starts_with('(') {
        return true;
    }

    let groups: Vec<&str> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let mut seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    seps.dedup();
    seps.sort_unstable();
    seps.dedup();
    let one_sep = |allowed: &str| seps.len() == 1 && allowed.contains(seps[0]);
    let (first, rest) = (groups[0], &groups[1..]);

    if groups.len() == 2 {
        // Two groups: a trunk-prefixed number (0151 12345678, 07700 900123)
        // or a US local number (555-1234); never a year range (2023-2024).
        return (first.starts_with('0') && first.len() >= 3 && digits >= 9)
            || (first.len() == 3 && rest[0].len() == 4 && one_sep("-"));
    }
    let is_year = |g: &str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    let looks_like = [
        // Short groups only: a list of small numbers, unless trunk-prefixed
        // (01 23 45 67 89).
        groups.iter().all(|g| g.len() <= 2) && !first.starts_with('0'),
        // A date: 2024-01-15, 15.01.2024, 01-15-24.
        groups.len() == 3
            && one_sep("-./")
            && ((first.len() == 4 && rest[0].len() <= 2 && rest[1].len() <= 2)
                || (first.len() <= 2 && rest[0].len() <= 2 && matches!(rest[1].len(), 2 | 4))),
        // An IPv4 address: 192.168.100.200.
        groups.len() == 4
            && one_sep(".")
            && !first.starts_with('0')
            && groups
                .iter()
                .all(|g| g.len() <= 3 && g.parse::<u16>().is_ok_and(|v| v <= 255)),
        // An amount: 1 000 000, 12.345.678, 250 000 000.
        one_sep(" .")
            && first.len() <= 3
            && rest.iter().all(|g| g.len() == 3)
            && (first.len() <= 2 || rest.contains(&"000")),
        // A list of years: 2020 2021 2022.
        groups.iter().all(|g| is_year(g)),
    ];
    !looks_like.iter().any(|&b| b)
}

// ---------------------------------------------------------------- card number

/// Digit groups separated by single spaces or dashes.
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| regex(r"[0-9]+(?:[ \-][0-9]+)*"));

fn cards(text: &str) -> Vec<Match> {
    let mut out = Vec::new();
    for run in DIGIT_RUN.find_iter(text) {
        let groups: Vec<(usize, usize)> = {
            let mut groups = Vec::new();
            let mut at = run.start();
            for g in run.as_str().split([' ', '-']) {
                groups.push((at, at + g.len()));
                at += g.len() + 1;
            }
            groups
        };
        // A group glued to letters or to a decimal point is part of
        // something else (an id, a fraction) and cannot start or end a card;
        // neither can a group after a `+`, which starts a phone number.
        let glued = |c: Option<char>, beyond: Option<char>| {
            c.is_some_and(|c| {
                c.is_alphanumeric()
                    || c == '_'
                    || c == '+'
                    || (".,".contains(c) && beyond.is_some_and(|b| b.is_ascii_digit()))
            })
        };
        let mut back = text[..run.start()].chars().rev();
        let mut fwd = text[run.end()..].chars();
        let first = usize::from(glued(back.next(), back.next()));
        let last = groups.len() - usize::from(glued(fwd.next(), fwd.next())); // exclusive

        // Leftmost, then longest, window of whole groups that is a card.
        let mut i = first;
        while i < last {
            let mut digits = 0;
            let mut best = None;
            for j in i..last {
                digits += groups[j].1 - groups[j].0;
                if digits > 19 {
                    break;
                }
                let (start, end) = (groups[i].0, groups[j].1);
                if digits >= 13 && is_card_number(&text[start..end]) {
                    best = Some((j, start, end));
                }
            }
            match best {
                Some((j, start, end)) => {
                    out.push(Match {
                        kind: PiiKind::CardNumber,
                        start,
                        end,
                    });
                    i = j + 1;
                }
                None => i += 1,
            }
        }
    }
    out
}

/// 13–19 digits (separators ignored), not starting with 0, passing Luhn.
fn is_card_number(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    (13..=19).contains(&digits.len()) && digits[0] != 0 && luhn(&digits)
}

// `u32::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 {
                    d - 9
                } else {
                    d
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

// ---------------------------------------------------------------- IBAN

/// Country code, check digits, then the BBAN either compact or in groups of four.
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"\b[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b")
});

fn ibans(text: &str) -> Vec<Match> {
    let mut out = Vec::new();
    for m in IBAN.find_iter(text) {
        // The grouped form may have swallowed a following group of four:
        // try the whole match, then drop trailing groups one at a time.
        let s = m.as_str();
        let mut ends = std::iter::once(s.len()).chain(s.match_indices(' ').map(|(i, _)| i).rev());
        if let Some(end) = ends.find(|&end| is_iban(&s[..end])) {
            out.push(Match {
                kind: PiiKind::Iban,
                start: m.start(),
                end: m.start() + end,
            });
        }
    }
    out
}

/// 15–34 characters (spaces ignored) passing the ISO 13616 mod-97 check.
fn is_iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|&b| b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    // Move the country code and check digits to the end, read letters as
    // 10..=35, and the whole number must be 1 modulo 97.
    let (head, bban) = compact.split_at(4);
    let mut rem: u32 = 0;
    for &b in bban.iter().chain(head) {
        rem = match b {
            b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(PiiKind, &str)> {
        find(text, &[])
            .into_iter()
            .map(|m| (m.kind, &text[m.start..m.end]))
            .collect()
    }

    fn only(kind: PiiKind, text: &str) -> Vec<&str> {
        find(text, &[kind])
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn emails() {
        use PiiKind::Email;
        assert_eq!(
            found("contact jane.doe+billing@mail.example.co.uk today"),
            [(Email, "jane.doe+billing@mail.example.co.uk")]
        );
        assert_eq!(
            found("<a_b-c@ex-ample.io>."),
            [(Email, "a_b-c@ex-ample.io")]
        );
        assert_eq!(found("jürgen@beispiel.de"), [(Email, "jürgen@beispiel.de")]);
        assert_eq!(found("...bob@x.io"), [(Email, "bob@x.io")]);
        for clean in [
            "user@localhost",
            "@handle",
            "a@b",
            "price 5@3.00",
            "me @ example.com",
        ] {
            assert_eq!(found(clean), [], "{clean}");
        }
    }

    #[test]
    fn phones() {
        for phone in [
            "+44 20 7946 0958",
            "+1 (555) 123-4567",
            "+1-555-123-4567",
            "+33 1 23 45 67 89",
            "+4915112345678",
            "+44 (0)20 7946 0958",
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "555 123 4567",
            "1-800-555-1234",
            "020 7946 0958",
            "0151 12345678",
            "07700 900123",
            "01 23 45 67 89",
            "555-1234",
        ] {
            let text = format!("call {phone}, thanks");
            assert_eq!(only(PiiKind::Phone, &text), [phone], "{phone}");
        }
    }

    #[test]
    fn phones_are_not_years_dates_amounts_or_short_numbers() {
        for clean in [
            "In 2023 we sold 1500 units.",
            "Revenue grew 2023-2024 by 12%.",
            "The years 2020 2021 2022 were hard.",
            "Due 2024-01-15 or 15.01.2024 or 01/15/2024.",
            "Population 1 000 000 and 12.345.678 people, 250 000 000 more.",
            "Pi is 3.14159265 roughly.",
            "Server 192.168.100.200 is down.",
            "Sizes 10 12 14 16 18 in stock.",
            "Order #12345, ticket ABC-1234567, version 1.2.3.4.",
            "Invoice 20240115 and order 5551234567.",
            "+5 points",
            "Call 555 12",
        ] {
            assert_eq!(only(PiiKind::Phone, clean), Vec::<&str>::new(), "{clean}");
        }
    }

    #[test]
    fn card_numbers_need_a_valid_luhn_checksum() {
        use PiiKind::CardNumber;
        for card in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5500 0000 0000 0004",
            "3782 822463 10005",
            "6011000990139424",
        ] {
            assert_eq!(
                found(&format!("pay with {card}.")),
                [(CardNumber, card)],
                "{card}"
            );
        }
        for invalid in [
            "4111 1111 1111 1112",
            "4111111111111112",
            "0000 0000 0000 0000",
            "4111 1111 1111",
            "41111111111111111111111",
        ] {
            assert_eq!(only(CardNumber, invalid), Vec::<&str>::new(), "{invalid}");
        }
    }

    #[test]
    fn card_numbers_inside_longer_digit_runs_and_ids() {
        assert_eq!(
            only(PiiKind::CardNumber, "card 4111 1111 1111 1111 2024 expiry"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            only(PiiKind::CardNumber, "id X4111111111111111"),
            Vec::<&str>::new()
        );
        assert_eq!(
            only(PiiKind::CardNumber, "0.4111111111111111"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn ibans_need_a_valid_mod97_checksum() {
        use PiiKind::Iban;
        for iban in [
            "GB82 WEST 1234 5698 7654 32",
            "GB82WEST12345698765432",
            "DE89 3704 0044 0532 0130 00",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NO93 8601 1117 947",
        ] {
            assert_eq!(found(&format!("IBAN: {iban}.")), [(Iban, iban)], "{iban}");
        }
        for invalid in [
            "GB82 WEST 1234 5698 7654 33",
            "GB83WEST12345698765432",
            "gb82 west 1234 5698 7654 32",
            "GB82 WEST",
        ] {
            assert_eq!(only(Iban, invalid), Vec::<&str>::new(), "{invalid}");
        }
        // A following group of four is not swallowed.
        assert_eq!(
            found("GB82 WEST 1234 5698 7654 32 1234 ok"),
            [(Iban, "GB82 WEST 1234 5698 7654 32")]
        );
        assert_eq!(
            found("BE68 5390 0754 7034 1234 ok"),
            [(Iban, "BE68 5390 0754 7034")]
        );
    }

    #[test]
    fn overlaps_prefer_the_more_specific_kind() {
        // 15 digits in phone-like groups that pass Luhn: a card, not a phone.
        let amex = "3782-8224-6310-005";
        assert_eq!(found(amex), [(PiiKind::CardNumber, amex)]);
        assert_eq!(only(PiiKind::Phone, amex), Vec::<&str>::new());
        // The digits of an IBAN are not a phone number.
        let iban = "GB82 WEST 1234 5698 7654 32";
        assert_eq!(found(iban), [(PiiKind::Iban, iban)]);
        assert_eq!(only(PiiKind::Phone, iban), Vec::<&str>::new());
        // Digits inside an email are part of the email.
        let email = "555.123.4567@example.com";
        assert_eq!(found(email), [(PiiKind::Email, email)]);
    }

    #[test]
    fn several_kinds_in_order() {
        let text = "x@y.io, +1 555 123 4567, 4111111111111111, GB82WEST12345698765432";
        let kinds: Vec<PiiKind> = found(text).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [
                PiiKind::Email,
                PiiKind::Phone,
                PiiKind::CardNumber,
                PiiKind::Iban
            ]
        );
    }

    #[test]
    fn checksums() {
        let digits = |s: &str| s.chars().filter_map(|c| c.to_digit(10)).collect::<Vec<_>>();
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert!(is_iban("GB82WEST12345698765432"));
        assert!(!is_iban("GB82WEST1234569876543!"));
    }
}
