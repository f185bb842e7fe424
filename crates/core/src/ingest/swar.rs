//! Byte search sixteen bytes at a time (SSE2) or eight in a u64 ("SIMD within a register"),
//! for the short fields of StatsD and event lines, where memchr's dispatch costs more than
//! the search.
//! Each is `#[inline]`: a call costs about what the search does (perf showed `same_bytes`
//! and `find2` as calls of their own, 8% of a StatsD flood).

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is zero (the lowest flagged byte is always a true
/// one; bytes above it may be flagged falsely, so only the lowest is used).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// High bit set in the bytes of `w` equal to `b` (the lowest is exact, see `zero_bytes`).
#[inline]
pub(crate) fn eq_bytes(w: u64, b: u8) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(b)))
}

/// Index of the first byte of `s` that is `a` or `b`: sixteen bytes at a time with SSE2
/// while sixteen are left, then eight at a time in a u64.
#[inline]
pub(crate) fn find2(s: &[u8], a: u8, b: u8) -> Option<usize> {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    while let Some(block) = s.get(i..i + 16) {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is part of x86_64; the load reads the sixteen bytes of `block` and
        // needs no alignment.
        let hits = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast());
            let hit = _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(a as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)),
            );
            _mm_movemask_epi8(hit) as u32
        };
        if hits != 0 {
            return Some(i + hits.trailing_zeros() as usize);
        }
        i += 16;
    }
    while let Some(chunk) = s.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hit = eq_bytes(w, a) | eq_bytes(w, b);
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&c| c == a || c == b).map(|j| i + j)
}

/// Byte equality eight bytes at a time, inline: names are a few dozen bytes, for which a
/// memcmp call costs more than the comparison. The last word overlaps the one before it
/// rather than comparing the rest byte by byte.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n < 8 {
        return a == b;
    }
    let word = |s: &[u8], i: usize| {
        s.get(i..i + 8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
    };
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn same_bytes_is_slice_equality(a in "[ab]{0,30}", b in "[ab]{0,30}") {
            proptest::prop_assert_eq!(same_bytes(a.as_bytes(), b.as_bytes()), a == b);
            proptest::prop_assert!(same_bytes(a.as_bytes(), a.as_bytes()));
        }

        #[test]
        fn same_bytes_sees_a_difference_anywhere(s in proptest::collection::vec(0u8..=255, 1..40), at: usize, by in 1u8..=255) {
            let mut t = s.clone();
            let k = at % t.len();
            t[k] = t[k].wrapping_add(by);
            proptest::prop_assert!(!same_bytes(&s, &t));
            proptest::prop_assert!(same_bytes(&s, &s.clone()));
        }

        #[test]
        fn find2_finds_what_a_byte_loop_finds(s in proptest::collection::vec(0u8..=255, 0..80), a: u8, b: u8) {
            let want = s.iter().position(|&c| c == a || c == b);
            proptest::prop_assert_eq!(find2(&s, a, b), want);
        }
    }
}
