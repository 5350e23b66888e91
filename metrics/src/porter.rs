//! The Porter stemmer as NLTK's `nltk.stem.porter.PorterStemmer` runs it in its
//! default mode, `NLTK_EXTENSIONS`: M. F. Porter, "An algorithm for suffix
//! stripping" (1980), with Martin Porter's later changes and NLTK's additions
//! (irregular forms, `ies`/`ied` on four-letter words, `y -> i` only after a
//! consonant that is not the first letter, `alli`, `fulli`, `logi`, a two-letter
//! `*o`). This is the stemmer `rouge-score` uses for `use_stemmer=True`.
//!
//! The Snowball "porter" stemmer (e.g. the `rust-stemmers` crate) is Martin
//! Porter's frozen version and stems some words differently (`dying`, `skies`,
//! `happily`...), hence this module. Reference behaviour: NLTK 3.x
//! `nltk/stem/porter.py`; parity with NLTK is checked in `tests/eval_metrics.rs`.

/// The stem of `word` as `PorterStemmer().stem(word)` returns it: the word is
/// lowercased first; words of at most two characters come back lowercased
/// only. Any text is accepted; the rules only recognise the ASCII letters
/// `a`-`z` (every other character counts as a consonant, as in NLTK).
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(base) = irregular_form(&lower) {
        return base.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}

/// NLTK's table of words stemmed by lookup rather than by the rules.
fn irregular_form(word: &str) -> Option<&'static str> {
    Some(match word {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

/// For each letter, whether it is a consonant: anything but `aeiou`, except
/// that `y` is a vowel after a consonant (a `y` that starts the word is one).
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let cons = match c {
            'a' | 'e' | 'i' | 'o' | 'u' => false,
            'y' => i == 0 || !flags[i - 1],
            _ => true,
        };
        flags.push(cons);
    }
    flags
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// The paper's m: the number of vowel-run-then-consonant-run pairs in `[C](VC){m}[V]`.
fn measure(w: &[char]) -> usize {
    let flags = consonant_flags(w);
    flags.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[char]) -> bool {
    consonant_flags(w).iter().any(|&c| !c)
}

/// `*d`: ends in the same consonant twice.
fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// `*o`: ends consonant-vowel-consonant with the last not `w`, `x` or `y`;
/// NLTK also accepts a two-letter vowel-consonant word.
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let n = suffix.chars().count();
    n <= w.len() && w[w.len() - n..].iter().copied().eq(suffix.chars())
}

/// `w` without its last `n` letters, then `replacement`.
fn replace_end(w: &[char], n: usize, replacement: &str) -> Vec<char> {
    let mut out = w[..w.len() - n].to_vec();
    out.extend(replacement.chars());
    out
}

/// A rule's condition on the stem left after removing the suffix.
type Condition<'a> = &'a dyn Fn(&[char]) -> bool;

/// The first rule whose suffix ends `w` decides: its replacement if the
/// condition holds on the stem, otherwise `w` unchanged (later rules are not
/// tried).
fn apply_rules(w: Vec<char>, rules: &[(&str, &str, Condition)]) -> Vec<char> {
    for &(suffix, replacement, condition) in rules {
        if ends_with(&w, suffix) {
            let n = suffix.chars().count();
            let stem = &w[..w.len() - n];
            return if condition(stem) {
                replace_end(&w, n, replacement)
            } else {
                w
            };
        }
    }
    w
}

fn always(_: &[char]) -> bool {
    true
}

fn m_gt_0(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn m_gt_1(stem: &[char]) -> bool {
    measure(stem) > 1
}

/// Plurals: `sses -> ss`, `ies -> i` (`ie` in a four-letter word), `ss`, `s -> `.
fn step1a(w: Vec<char>) -> Vec<char> {
    if w.len() == 4 && ends_with(&w, "ies") {
        return replace_end(&w, 3, "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", &always),
            ("ies", "i", &always),
            ("ss", "ss", &always),
            ("s", "", &always),
        ],
    )
}

/// `-ied`, `(m>0) eed -> ee`, `(*v*) ed|ing -> ` and the tidying after the latter.
fn step1b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ied") {
        return replace_end(&w, 3, if w.len() == 4 { "ie" } else { "i" });
    }
    if ends_with(&w, "eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 {
            replace_end(&w, 1, "")
        } else {
            w
        };
    }
    let Some(stem) = ["ed", "ing"].iter().find_map(|suffix| {
        let n = suffix.len();
        (ends_with(&w, suffix) && contains_vowel(&w[..w.len() - n]))
            .then(|| w[..w.len() - n].to_vec())
    }) else {
        return w;
    };
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if ends_with(&stem, suffix) {
            return replace_end(&stem, 2, replacement);
        }
    }
    if ends_double_consonant(&stem) {
        let last = stem[stem.len() - 1];
        return if matches!(last, 'l' | 's' | 'z') {
            stem
        } else {
            replace_end(&stem, 1, "")
        };
    }
    if measure(&stem) == 1 && ends_cvc(&stem) {
        return replace_end(&stem, 0, "e");
    }
    stem
}

/// `y -> i` after a consonant that is not the word's only letter before it.
fn step1c(w: Vec<char>) -> Vec<char> {
    let condition = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[("y", "i", &condition)])
}

/// Double suffixes to single ones (`ational -> ate`, ...), all under m > 0.
fn step2(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "alli") && m_gt_0(&w[..w.len() - 4]) {
        return step2(replace_end(&w, 4, "al"));
    }
    // `logi -> log` if the stem *with* its `l` has m > 0.
    let logi_condition = |stem: &[char]| {
        let mut with_l = stem.to_vec();
        with_l.push('l');
        m_gt_0(&with_l)
    };
    apply_rules(
        w,
        &[
            ("ational", "ate", &m_gt_0),
            ("tional", "tion", &m_gt_0),
            ("enci", "ence", &m_gt_0),
            ("anci", "ance", &m_gt_0),
            ("izer", "ize", &m_gt_0),
            ("bli", "ble", &m_gt_0),
            ("alli", "al", &m_gt_0),
            ("entli", "ent", &m_gt_0),
            ("eli", "e", &m_gt_0),
            ("ousli", "ous", &m_gt_0),
            ("ization", "ize", &m_gt_0),
            ("ation", "ate", &m_gt_0),
            ("ator", "ate", &m_gt_0),
            ("alism", "al", &m_gt_0),
            ("iveness", "ive", &m_gt_0),
            ("fulness", "ful", &m_gt_0),
            ("ousness", "ous", &m_gt_0),
            ("aliti", "al", &m_gt_0),
            ("iviti", "ive", &m_gt_0),
            ("biliti", "ble", &m_gt_0),
            ("fulli", "ful", &m_gt_0),
            ("logi", "log", &logi_condition),
        ],
    )
}

/// `-icate`, `-ative`, `-alize`, `-iciti`, `-ical`, `-ful`, `-ness` under m > 0.
fn step3(w: Vec<char>) -> Vec<char> {
    apply_rules(
        w,
        &[
            ("icate", "ic", &m_gt_0),
            ("ative", "", &m_gt_0),
            ("alize", "al", &m_gt_0),
            ("iciti", "ic", &m_gt_0),
            ("ical", "ic", &m_gt_0),
            ("ful", "", &m_gt_0),
            ("ness", "", &m_gt_0),
        ],
    )
}

/// Suffixes removed under m > 1 (`-ion` only after `s` or `t`).
fn step4(w: Vec<char>) -> Vec<char> {
    let ion = |stem: &[char]| m_gt_1(stem) && matches!(stem.last(), Some('s' | 't'));
    apply_rules(
        w,
        &[
            ("al", "", &m_gt_1),
            ("ance", "", &m_gt_1),
            ("ence", "", &m_gt_1),
            ("er", "", &m_gt_1),
            ("ic", "", &m_gt_1),
            ("able", "", &m_gt_1),
            ("ible", "", &m_gt_1),
            ("ant", "", &m_gt_1),
            ("ement", "", &m_gt_1),
            ("ment", "", &m_gt_1),
            ("ent", "", &m_gt_1),
            ("ion", "", &ion),
            ("ou", "", &m_gt_1),
            ("ism", "", &m_gt_1),
            ("ate", "", &m_gt_1),
            ("iti", "", &m_gt_1),
            ("ous", "", &m_gt_1),
            ("ive", "", &m_gt_1),
            ("ize", "", &m_gt_1),
        ],
    )
}

/// `(m>1) e -> `, `(m=1 and not *o) e -> `.
fn step5a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

/// `(m>1 and *d and *L) -> single letter`, the measure taken with one `l` kept.
fn step5b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ll") && m_gt_1(&w[..w.len() - 1]) {
        return replace_end(&w, 1, "");
    }
    w
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn examples_from_the_paper_and_nltk() {
        // (word, PorterStemmer().stem(word)) from NLTK 3.10 in its default mode.
        let cases = [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("sing", "sing"),
            ("conflated", "conflat"),
            ("troubled", "troubl"),
            ("sized", "size"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("relational", "relat"),
            ("conditional", "condit"),
            ("generalization", "gener"),
            ("hopefulness", "hope"),
            ("electrical", "electr"),
            ("adoption", "adopt"),
            ("controlling", "control"),
            ("dying", "die"),
            ("skies", "sky"),
            ("died", "die"),
            ("cried", "cri"),
            ("happily", "happili"),
            ("analogies", "analog"),
            ("at", "at"),
            ("AS", "as"),
            ("yyyy", "yyyi"),
            ("1990s", "1990"),
        ];
        for (word, want) in cases {
            assert_eq!(stem(word), want, "{word}");
        }
    }
}
