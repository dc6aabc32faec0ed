//! Character classes and the GPT-2 byte-to-unicode mapping.
//!
//! The classes follow the Unicode general categories (`\p{L}`, `\p{N}`,
//! `\p{P}`) and the White_Space property (`\s`), which is what the
//! reference tokenizer's tables are generated from; approximations such as
//! `char::is_alphabetic` (which also admits combining marks) would split
//! words differently.

use unicode_general_category::{GeneralCategory, get_general_category};

/// `\p{L}`: any letter category (Lu, Ll, Lt, Lm, Lo).
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// `\p{N}`: any number category (Nd, Nl, No).
pub(crate) fn is_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::DecimalNumber
            | GeneralCategory::LetterNumber
            | GeneralCategory::OtherNumber
    )
}

/// `\p{P}`: any punctuation category.
pub(crate) fn is_punctuation(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::ConnectorPunctuation
            | GeneralCategory::DashPunctuation
            | GeneralCategory::OpenPunctuation
            | GeneralCategory::ClosePunctuation
            | GeneralCategory::InitialPunctuation
            | GeneralCategory::FinalPunctuation
            | GeneralCategory::OtherPunctuation
    )
}

/// `\s`: the White_Space property (which leaves out U+001C..U+001F).
pub(crate) fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// The bytes GPT-2 maps to themselves: printable Latin-1 except the soft
/// hyphen. Every other byte `b` maps to U+0100 + (its rank among them).
const fn maps_to_itself(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

const fn byte_to_codepoint_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut next = 0u32;
    let mut b = 0usize;
    while b < 256 {
        if maps_to_itself(b as u8) {
            table[b] = b as u32;
        } else {
            table[b] = 256 + next;
            next += 1;
        }
        b += 1;
    }
    table
}

const fn shifted_bytes_table() -> [u8; 68] {
    let mut table = [0u8; 68];
    let mut next = 0usize;
    let mut b = 0usize;
    while b < 256 {
        if !maps_to_itself(b as u8) {
            table[next] = b as u8;
            next += 1;
        }
        b += 1;
    }
    table
}

const BYTE_TO_CODEPOINT: [u32; 256] = byte_to_codepoint_table();
/// The bytes that map to U+0100.., in order.
const SHIFTED_BYTES: [u8; 68] = shifted_bytes_table();

/// The character GPT-2's byte-level encoding uses for `byte`.
pub(crate) fn byte_to_char(byte: u8) -> char {
    char::from_u32(BYTE_TO_CODEPOINT[usize::from(byte)]).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte a byte-level character stands for, if it is one.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if cp < 256 {
        let b = cp as u8;
        return maps_to_itself(b).then_some(b);
    }
    let index = usize::try_from(cp - 256).ok()?;
    SHIFTED_BYTES.get(index).copied()
}

/// Appends the byte-level encoding of `text` to `out`.
pub(crate) fn byte_encode_into(text: &str, out: &mut String) {
    for &b in text.as_bytes() {
        out.push(byte_to_char(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), '\u{120}');
        assert_eq!(byte_to_char(b'\n'), '\u{10A}');
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(char_to_byte('\u{144}'), None);
    }

    #[test]
    fn classes_follow_general_categories() {
        assert!(is_letter('é') && is_letter('ß') && is_letter('中'));
        // A combining mark is alphabetic but not a letter.
        assert!('\u{093E}'.is_alphabetic() && !is_letter('\u{093E}'));
        assert!(is_number('٣') && is_number('Ⅻ') && is_number('½'));
        assert!(is_punctuation('«') && !is_punctuation('$'));
        assert!(is_whitespace('\u{3000}') && !is_whitespace('\u{1C}'));
    }
}
