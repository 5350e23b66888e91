//! Token samplers: a composable chain of logit transforms followed by a pick.
//!
//! ```text
//! logits -> [LogitBias] -> [Penalties] -> [TopK] -> [TopP] -> [MinP] -> [Temperature] -> pick
//! ```
//! (the order [`SamplerConfig`] builds; [`Sampler::from_stages`] takes any order in
//! which the stages that address tokens by id, `LogitBias` and `Penalties`, come
//! before the ones that drop candidates). The pick is greedy (argmax, first on
//! ties) or a draw from the softmax of the surviving candidates with a seeded
//! [`Rng`]: same seed and logits, same tokens, on any machine and thread count.
//!
//! Every buffer (candidates, penalty history and counts) is allocated in the
//! constructor; `sample` and `accept` never allocate.

mod rng;

pub use rng::{mix64, Rng};

use crate::error::{Error, Result};

/// One candidate token and its (transformed) logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Repetition / presence / frequency penalties over the last `last_n` accepted
/// tokens. For a token seen `c > 0` times: `logit = logit / repeat` if positive,
/// `logit * repeat` otherwise (CTRL / llama.cpp), then
/// `logit -= c * frequency + presence`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Penalties {
    pub last_n: usize,
    /// > 0; 1 = off.
    pub repeat: f32,
    pub presence: f32,
    pub frequency: f32,
}

/// One step of the chain.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// Adds a bias to the logits of the listed tokens (`-inf` bans a token).
    LogitBias(Vec<(u32, f32)>),
    /// See [`Penalties`].
    Penalties(Penalties),
    /// Keeps the `k` highest logits (0 = off).
    TopK(usize),
    /// Keeps the smallest set of highest-probability tokens whose probability
    /// sums to at least `p` (nucleus sampling), in (0, 1].
    TopP(f32),
    /// Keeps tokens whose probability is at least `p` times the highest, in [0, 1].
    MinP(f32),
    /// Divides the logits by `t` (> 0); `t == 0` keeps only the best token.
    Temperature(f32),
}

/// How the token is chosen from the surviving candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The highest logit (the lowest id on ties).
    Greedy,
    /// A draw from the softmax of the candidates' logits.
    Random,
}

/// The usual sampling settings; [`SamplerConfig::stages`] turns them into a chain.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 = greedy (the default): no randomness, the truncation stages are skipped.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
    /// Window of the penalties, in tokens.
    pub repeat_last_n: usize,
    /// 0 = off.
    pub presence_penalty: f32,
    /// 0 = off.
    pub frequency_penalty: f32,
    /// `(token, bias)` pairs.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// Greedy; with a temperature set, top-k 40, top-p 0.95 and min-p 0.05 apply
    /// (llama.cpp's defaults); penalties off over a 64-token window; seed 0.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

/// The largest penalty window [`Sampler::new`] accepts, in tokens: the window
/// is allocated up front, so a larger request is refused rather than attempted.
pub const MAX_PENALTY_WINDOW: usize = 1 << 20;

impl SamplerConfig {
    /// Greedy decoding with no penalties.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Checks every setting, whether or not the chain would use it (a greedy
    /// config with top-p 2 is as wrong as a sampled one): temperature finite
    /// and >= 0, top-p in (0, 1], min-p in [0, 1], a finite positive repeat
    /// penalty, finite presence and frequency penalties, the window at most
    /// [`MAX_PENALTY_WINDOW`]. Errors: `InvalidArgument` naming the setting.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        check(t.is_finite() && t >= 0.0, || {
            format!("temperature {t} must be a finite number >= 0")
        })?;
        let p = self.top_p;
        check(p > 0.0 && p <= 1.0, || {
            format!("top-p {p} must be in (0, 1]")
        })?;
        let m = self.min_p;
        check((0.0..=1.0).contains(&m), || {
            format!("min-p {m} must be in [0, 1]")
        })?;
        let r = self.repeat_penalty;
        check(r.is_finite() && r > 0.0, || {
            format!("repeat penalty {r} must be a finite number > 0")
        })?;
        check(self.presence_penalty.is_finite(), || {
            format!("presence penalty {} must be finite", self.presence_penalty)
        })?;
        check(self.frequency_penalty.is_finite(), || {
            format!(
                "frequency penalty {} must be finite",
                self.frequency_penalty
            )
        })?;
        check(self.repeat_last_n <= MAX_PENALTY_WINDOW, || {
            format!(
                "penalty window {} is more than the limit of {MAX_PENALTY_WINDOW} tokens",
                self.repeat_last_n
            )
        })
    }

    /// The chain for these settings (stages that would do nothing are left out).
    pub fn stages(&self) -> (Vec<Stage>, Pick) {
        let mut s = Vec::new();
        if !self.logit_bias.is_empty() {
            s.push(Stage::LogitBias(self.logit_bias.clone()));
        }
        let p = Penalties {
            last_n: self.repeat_last_n,
            repeat: self.repeat_penalty,
            presence: self.presence_penalty,
            frequency: self.frequency_penalty,
        };
        if p.last_n > 0 && (p.repeat != 1.0 || p.presence != 0.0 || p.frequency != 0.0) {
            s.push(Stage::Penalties(p));
        }
        if self.temperature <= 0.0 {
            return (s, Pick::Greedy);
        }
        if self.top_k > 0 {
            s.push(Stage::TopK(self.top_k));
        }
        if self.top_p < 1.0 {
            s.push(Stage::TopP(self.top_p));
        }
        if self.min_p > 0.0 {
            s.push(Stage::MinP(self.min_p));
        }
        s.push(Stage::Temperature(self.temperature));
        (s, Pick::Random)
    }
}

/// A sampler chain with its buffers, for a vocabulary of fixed size.
#[derive(Clone, Debug)]
pub struct Sampler {
    stages: Vec<Stage>,
    pick: Pick,
    seed: u64,
    rng: Rng,
    /// `[vocab]`; the first `n` are the live candidates.
    cand: Vec<Candidate>,
    n: usize,
    /// True when `cand[..n]` is sorted by logit, descending (ids ascending on ties).
    sorted: bool,
    /// Ring of the last accepted tokens (capacity = the largest penalty window).
    history: Vec<u32>,
    hist_len: usize,
    hist_next: usize,
    /// `[vocab]` occurrences of each token in the ring (empty without penalties).
    counts: Vec<u32>,
    /// `[vocab]` epoch at which a token's penalty was last applied.
    applied: Vec<u32>,
    epoch: u32,
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(what()))
    }
}

/// Whether `bias` (ids checked in range) gives -inf to all `vocab` tokens.
fn bans_every_token(bias: &[(u32, f32)], vocab: usize) -> bool {
    if bias.len() < vocab {
        return false;
    }
    let mut banned = vec![false; vocab];
    for &(id, b) in bias {
        if b == f32::NEG_INFINITY {
            banned[id as usize] = true;
        }
    }
    banned.iter().all(|&b| b)
}

impl Sampler {
    /// The chain of `config` for a vocabulary of `vocab` tokens. Validates the
    /// settings (ranges as documented on [`Stage`], finite values, bias ids in range).
    pub fn new(vocab: usize, config: &SamplerConfig) -> Result<Self> {
        config.validate()?;
        let (stages, pick) = config.stages();
        Self::from_stages(vocab, stages, pick, config.seed)
    }

    /// A chain of `stages` then `pick`, seeded with `seed`.
    pub fn from_stages(vocab: usize, stages: Vec<Stage>, pick: Pick, seed: u64) -> Result<Self> {
        check(vocab > 0 && vocab <= u32::MAX as usize, || {
            format!("vocabulary size {vocab} is invalid")
        })?;
        let mut truncated = false;
        let mut window = 0;
        for s in &stages {
            match s {
                Stage::LogitBias(b) => {
                    check(!truncated, || {
                        "logit bias must come before top-k/top-p/min-p/temperature".into()
                    })?;
                    for &(id, bias) in b {
                        check((id as usize) < vocab, || {
                            format!("logit bias token {id} is out of range (vocabulary {vocab})")
                        })?;
                        check(!bias.is_nan() && bias != f32::INFINITY, || {
                            format!("logit bias {bias} for token {id} must be finite or -inf")
                        })?;
                    }
                    check(!bans_every_token(b, vocab), || {
                        "the logit bias bans every token (-inf for all of them): nothing can be generated"
                            .into()
                    })?;
                }
                Stage::Penalties(p) => {
                    check(!truncated, || {
                        "penalties must come before top-k/top-p/min-p/temperature".into()
                    })?;
                    check(p.repeat.is_finite() && p.repeat > 0.0, || {
                        format!("repeat penalty {} must be > 0", p.repeat)
                    })?;
                    check(p.presence.is_finite() && p.frequency.is_finite(), || {
                        "presence and frequency penalties must be finite".into()
                    })?;
                    check(p.last_n <= MAX_PENALTY_WINDOW, || {
                        format!(
                            "penalty window {} is more than the limit of {MAX_PENALTY_WINDOW} tokens",
                            p.last_n
                        )
                    })?;
                    window = window.max(p.last_n);
                }
                Stage::TopK(_) => truncated = true,
                Stage::TopP(p) => {
                    check(*p > 0.0 && *p <= 1.0, || {
                        format!("top-p {p} must be in (0, 1]")
                    })?;
                    truncated = true;
                }
                Stage::MinP(p) => {
                    check((0.0..=1.0).contains(p), || {
                        format!("min-p {p} must be in [0, 1]")
                    })?;
                    truncated = true;
                }
                Stage::Temperature(t) => {
                    check(t.is_finite() && *t >= 0.0, || {
                        format!("temperature {t} must be >= 0")
                    })?;
                    truncated = true;
                }
            }
        }
        let counted = if window > 0 { vocab } else { 0 };
        Ok(Self {
            stages,
            pick,
            seed,
            rng: Rng::seed(seed),
            cand: vec![Candidate { id: 0, logit: 0.0 }; vocab],
            n: 0,
            sorted: false,
            history: vec![0; window],
            hist_len: 0,
            hist_next: 0,
            counts: vec![0; counted],
            applied: vec![0; counted],
            epoch: 0,
        })
    }

    /// Vocabulary size it was built for.
    pub fn vocab(&self) -> usize {
        self.cand.len()
    }

    /// The stages of the chain.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Forgets the penalty history and restarts the random stream from the seed.
    pub fn reset(&mut self) {
        self.hist_len = 0;
        self.hist_next = 0;
        self.counts.fill(0);
        self.rng = Rng::seed(self.seed);
    }

    /// Forgets the recorded tokens (the penalties' window), keeping the random
    /// stream where it is.
    pub fn clear_history(&mut self) {
        self.hist_len = 0;
        self.hist_next = 0;
        self.counts.fill(0);
    }

    /// Restarts the random stream from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.rng = Rng::seed(seed);
    }

    /// Records `token` (generated or from the prompt) for the penalties.
    /// Out-of-range ids are ignored.
    pub fn accept(&mut self, token: u32) {
        let cap = self.history.len();
        if cap == 0 || token as usize >= self.counts.len() {
            return;
        }
        if self.hist_len == cap {
            let old = self.history[self.hist_next];
            self.counts[old as usize] -= 1;
        } else {
            self.hist_len += 1;
        }
        self.history[self.hist_next] = token;
        self.counts[token as usize] += 1;
        self.hist_next = (self.hist_next + 1) % cap;
    }

    /// The candidates that survived the last `sample` (sorted by logit when a
    /// truncation stage ran), with their transformed logits.
    pub fn candidates(&self) -> &[Candidate] {
        &self.cand[..self.n]
    }

    /// Runs the chain over `logits` (`len == vocab`; NaN counts as `-inf`) and
    /// returns the chosen token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        assert_eq!(logits.len(), self.cand.len(), "sampler: logits length");
        for (i, (c, &l)) in self.cand.iter_mut().zip(logits).enumerate() {
            *c = Candidate {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
            };
        }
        self.n = self.cand.len();
        self.sorted = false;
        for i in 0..self.stages.len() {
            // Index loop: stages are read while the candidates are mutated.
            match &self.stages[i] {
                Stage::LogitBias(b) => {
                    for &(id, bias) in b {
                        self.cand[id as usize].logit += bias;
                    }
                }
                Stage::Penalties(p) => {
                    let p = *p;
                    self.apply_penalties(p);
                }
                &Stage::TopK(k) => self.top_k(k),
                &Stage::TopP(p) => self.top_p(p),
                &Stage::MinP(p) => self.min_p(p),
                &Stage::Temperature(t) => self.temperature(t),
            }
        }
        match self.pick {
            Pick::Greedy => self.best().id,
            Pick::Random => self.draw(),
        }
    }

    fn apply_penalties(&mut self, p: Penalties) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.applied.fill(0);
            self.epoch = 1;
        }
        let cap = self.history.len();
        let n = self.hist_len.min(p.last_n);
        // The last n accepted tokens, newest first.
        for back in 1..=n {
            let t = self.history[(self.hist_next + cap - back) % cap] as usize;
            if self.applied[t] == self.epoch {
                continue;
            }
            self.applied[t] = self.epoch;
            // Counts cover the whole ring; with a shorter window, count in it.
            let c = if n == self.hist_len {
                self.counts[t]
            } else {
                (1..=n)
                    .filter(|&b| self.history[(self.hist_next + cap - b) % cap] as usize == t)
                    .count() as u32
            };
            let l = &mut self.cand[t].logit;
            if *l > 0.0 {
                *l /= p.repeat;
            } else {
                *l *= p.repeat;
            }
            *l -= c as f32 * p.frequency + p.presence;
        }
    }

    /// The best live candidate (first on ties in the current order).
    fn best(&self) -> Candidate {
        if self.sorted {
            return self.cand[0];
        }
        let mut best = self.cand[0];
        for c in &self.cand[1..self.n] {
            if c.logit > best.logit {
                best = *c;
            }
        }
        best
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.cand[..self.n].sort_unstable_by(by_logit_desc);
            self.sorted = true;
        }
    }

    fn top_k(&mut self, k: usize) {
        if k == 0 || k >= self.n {
            return;
        }
        if !self.sorted {
            self.cand[..self.n].select_nth_unstable_by(k - 1, by_logit_desc);
            self.cand[..k].sort_unstable_by(by_logit_desc);
            self.sorted = true;
        }
        self.n = k;
    }

    fn top_p(&mut self, p: f32) {
        if p >= 1.0 || self.n <= 1 {
            return;
        }
        self.sort();
        let live = &self.cand[..self.n];
        let max = live[0].logit as f64;
        let total: f64 = live.iter().map(|c| (c.logit as f64 - max).exp()).sum();
        let target = p as f64 * total;
        let mut cum = 0.0;
        let mut keep = self.n;
        for (i, c) in live.iter().enumerate() {
            cum += (c.logit as f64 - max).exp();
            if cum >= target {
                keep = i + 1;
                break;
            }
        }
        self.n = keep;
    }

    fn min_p(&mut self, p: f32) {
        if p <= 0.0 || self.n <= 1 {
            return;
        }
        let max = self.best().logit;
        // prob_i / prob_max >= p  <=>  logit_i >= max + ln p
        let threshold = max + p.ln();
        let mut kept = 0;
        for i in 0..self.n {
            if self.cand[i].logit >= threshold {
                self.cand[kept] = self.cand[i];
                kept += 1;
            }
        }
        self.n = kept.max(1);
    }

    fn temperature(&mut self, t: f32) {
        if t > 0.0 {
            for c in &mut self.cand[..self.n] {
                c.logit /= t;
            }
        } else {
            let best = self.best();
            self.cand[0] = best;
            self.n = 1;
        }
    }

    /// Draws from the softmax of the live candidates (in f64).
    fn draw(&mut self) -> u32 {
        let live = &self.cand[..self.n];
        let max = self.best().logit;
        if max == f32::NEG_INFINITY {
            return live[0].id;
        }
        let max = max as f64;
        let total: f64 = live.iter().map(|c| (c.logit as f64 - max).exp()).sum();
        let r = self.rng.next_f64() * total;
        let mut cum = 0.0;
        for c in live {
            cum += (c.logit as f64 - max).exp();
            if r < cum {
                return c.id;
            }
        }
        // Rounding left r at the very end: the last candidate with weight.
        live.iter()
            .rev()
            .find(|c| c.logit > f32::NEG_INFINITY)
            .map_or(live[0].id, |c| c.id)
    }
}

/// Descending logit, then ascending id: a total order, so results are unique.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 3.0, -1.0]
    }

    #[test]
    fn greedy_is_argmax_first_on_ties() {
        let mut s = Sampler::new(6, &SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&logits()), 1);
        assert_eq!(crate::session::argmax(&logits()), 1);
    }

    #[test]
    fn every_setting_is_range_checked_even_when_unused() {
        let bad = |f: fn(&mut SamplerConfig), what: &str| {
            let mut c = SamplerConfig::greedy();
            f(&mut c);
            let e = Sampler::new(6, &c).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        bad(|c| c.temperature = f32::NAN, "temperature");
        bad(|c| c.temperature = -1.0, "temperature");
        bad(|c| c.top_p = 2.0, "top-p 2");
        bad(|c| c.top_p = f32::NAN, "top-p NaN");
        bad(|c| c.top_p = 0.0, "top-p 0");
        bad(|c| c.min_p = f32::NAN, "min-p NaN");
        bad(|c| c.min_p = -1.0, "min-p -1");
        bad(|c| c.repeat_penalty = 0.0, "repeat penalty");
        bad(|c| c.presence_penalty = f32::INFINITY, "presence penalty");
        bad(|c| c.frequency_penalty = f32::NAN, "frequency penalty");
        // Refused before its window is allocated (u32::MAX tokens = 17 GB).
        bad(|c| c.repeat_last_n = u32::MAX as usize, "limit");
        // Banning every token leaves nothing to generate.
        let mut c = SamplerConfig::greedy();
        c.logit_bias = (0..6).map(|id| (id, f32::NEG_INFINITY)).collect();
        let e = Sampler::new(6, &c).unwrap_err().to_string();
        assert!(e.contains("bans every token"), "{e}");
        c.logit_bias[3].1 = -1e9;
        assert!(Sampler::new(6, &c).is_ok(), "one token left is enough");
        let mut penalised = SamplerConfig::greedy();
        penalised.repeat_penalty = 1.1;
        penalised.repeat_last_n = MAX_PENALTY_WINDOW;
        assert!(Sampler::new(6, &penalised).is_ok());
    }

    #[test]
    fn top_k_keeps_the_k_best_sorted() {
        let mut s = Sampler::from_stages(6, vec![Stage::TopK(3)], Pick::Random, 1).unwrap();
        s.sample(&logits());
        let ids: Vec<u32> = s.candidates().iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 4, 2]);
    }

    #[test]
    fn top_p_and_min_p_truncate() {
        let mut s = Sampler::from_stages(6, vec![Stage::TopP(0.5)], Pick::Random, 1).unwrap();
        s.sample(&logits());
        // p(1) = p(4) ≈ 0.37 each: two are needed to reach 0.5.
        assert_eq!(s.candidates().len(), 2);
        let mut s = Sampler::from_stages(6, vec![Stage::MinP(0.3)], Pick::Random, 1).unwrap();
        s.sample(&logits());
        // e^(2-3) = 0.37 >= 0.3 survives, e^(1-3) = 0.14 does not.
        let mut ids: Vec<u32> = s.candidates().iter().map(|c| c.id).collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 4]);
    }

    #[test]
    fn penalties_and_bias() {
        let stages = vec![
            Stage::LogitBias(vec![(5, 10.0)]),
            Stage::Penalties(Penalties {
                last_n: 4,
                repeat: 2.0,
                presence: 0.5,
                frequency: 0.25,
            }),
        ];
        let mut s = Sampler::from_stages(6, stages, Pick::Greedy, 0).unwrap();
        for t in [1, 1, 3] {
            s.accept(t);
        }
        s.sample(&logits());
        let c = s.candidates();
        assert_eq!(c[5].logit, 9.0);
        assert_eq!(c[1].logit, 3.0 / 2.0 - 2.0 * 0.25 - 0.5);
        assert_eq!(c[3].logit, 0.5 / 2.0 - 0.25 - 0.5);
        assert_eq!(c[0].logit, 1.0);
    }

    #[test]
    fn penalty_window_slides() {
        let p = Penalties {
            last_n: 2,
            repeat: 1.0,
            presence: 1.0,
            frequency: 0.0,
        };
        let mut s = Sampler::from_stages(6, vec![Stage::Penalties(p)], Pick::Greedy, 0).unwrap();
        for t in [4, 0, 2] {
            s.accept(t);
        }
        s.sample(&logits());
        assert_eq!(s.candidates()[4].logit, 3.0, "4 left the window");
        assert_eq!(s.candidates()[2].logit, 1.0);
    }

    #[test]
    fn same_seed_same_draws() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let draw = || {
            let mut s = Sampler::new(6, &cfg).unwrap();
            (0..50).map(|_| s.sample(&logits())).collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        assert!(a.iter().any(|&t| t != a[0]), "temperature 1 must vary");
        assert!(a.iter().all(|&t| t != 5 || logits()[5] > -100.0));
    }

    #[test]
    fn invalid_settings_are_errors() {
        let bad = [
            SamplerConfig {
                temperature: -1.0,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.0,
                top_p: 0.0,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.0,
                min_p: 2.0,
                ..Default::default()
            },
            SamplerConfig {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplerConfig {
                logit_bias: vec![(6, 1.0)],
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(Sampler::new(6, &c).is_err(), "{c:?}");
        }
        assert!(Sampler::from_stages(
            6,
            vec![Stage::TopK(2), Stage::LogitBias(vec![])],
            Pick::Greedy,
            0
        )
        .is_err());
    }
}
