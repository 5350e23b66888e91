//! Text-generation metrics with parity to the Python reference tools.
//!
//! - [`bleu`]: corpus BLEU as sacreBLEU 2.x computes it by default (13a
//!   tokenisation, n-grams up to 4, `exp` smoothing, closest-reference brevity
//!   penalty), with its `none`, `intl` and `char` tokenizers and `--lowercase`.
//! - [`rouge`]: ROUGE-N, ROUGE-L and ROUGE-Lsum precision / recall / F1 as
//!   Google's `rouge-score` package computes them, with its default tokenizer.
//! - [`porter`]: the Porter stemmer as NLTK's `PorterStemmer` runs it by default
//!   (`NLTK_EXTENSIONS` mode), which `rouge-score` uses for `use_stemmer=True`.
//! - [`outputs`]: BLEU, mean ROUGE and exact match of generated outputs
//!   against per-output references in one call (`score_outputs`).
//!
//! Pure functions over `&str`; no model, runtime or I/O. Parity with the
//! Python packages is checked by `tests/eval_metrics.rs` against goldens made
//! by `scripts/make_eval_goldens.py`.

#![forbid(unsafe_code)]

pub mod bleu;
pub mod outputs;
pub mod porter;
mod pystr;
pub mod rouge;
