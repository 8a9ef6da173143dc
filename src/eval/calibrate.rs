//! A measured position policy per model file (`decache eval --calibrate`):
//! which way of deleting in place (`keep` or `shift`, with or without a
//! boundary refresh of N tokens) keeps the answers closest to a recompute's
//! at a bounded cost, on the annotated sets. `--positions auto` follows the
//! calibration of the model file when there is one (by its fingerprint):
//! written by `--calibrate` under the user's cache, or shipped with decache
//! for the default models (`calibration/`).
use super::report::overall;
use super::SetResult;
use crate::session::PositionPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Environment variable that overrides where calibrations are written and read.
pub const CALIBRATION_DIR_ENV: &str = "DECACHE_CALIBRATION_DIR";

/// A refresh may cost at most this share of the tokens a recompute evaluates.
pub const MAX_EXTRA_SHARE: f64 = 0.10;

/// Candidates whose answer perplexity is within this factor of the best
/// one's count as equally good; the cheapest of them is chosen.
pub const TIE: f64 = 1.01;

/// One way of deleting in place, as measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    /// The eval strategy (`shift+refresh:16`).
    pub strategy: String,
    /// `keep` or `shift`.
    pub positions: String,
    /// Tokens refreshed after each gap (0: none).
    pub refresh: usize,
    /// Token-weighted mean KL to the recompute's next-token distributions.
    pub kl_recompute: f64,
    /// Mean over sets of its answer perplexity / the recompute's.
    pub ppl_vs_recompute: f64,
    /// Tokens it evaluated beyond plain `keep`'s (the refreshes), over the
    /// tokens the recompute evaluated.
    pub extra_share: f64,
    /// Within the cost bound (`MAX_EXTRA_SHARE`).
    pub eligible: bool,
}

/// What `--positions auto` does for this model file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Choice {
    #[serde(with = "policy_name")]
    pub positions: PositionPolicy,
    pub refresh: usize,
}

mod policy_name {
    use crate::session::PositionPolicy;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(p: &PositionPolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PositionPolicy, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "keep" => Ok(PositionPolicy::Keep),
            "shift" => Ok(PositionPolicy::Shift),
            _ => Err(serde::de::Error::custom(format!("positions '{s}': keep or shift"))),
        }
    }
}

/// A model file's calibration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// The model file's name (informative) and identity (what is matched).
    pub model: String,
    pub fingerprint: String,
    /// The sets measured and the command that measured them.
    pub sets: Vec<String>,
    pub command: String,
    pub candidates: Vec<Candidate>,
    pub choice: Choice,
    /// How the choice was made, in words.
    pub rule: String,
}

/// Choose from eval results that hold `recompute` and in-place strategies.
pub fn calibrate(results: &[SetResult], model: &str, fingerprint: &str, command: &str) -> Result<Calibration, String> {
    let all = overall(results);
    let recompute = all
        .iter()
        .find(|o| o.strategy == "recompute")
        .ok_or("calibration needs the recompute strategy as its reference")?;
    let base = all
        .iter()
        .find(|o| o.strategy == "keep" || o.strategy == "shift")
        .ok_or("calibration needs keep or shift among the strategies")?;
    let mut candidates = Vec::new();
    for o in &all {
        let s: super::Strategy = o.strategy.parse()?;
        let positions = match s {
            super::Strategy::Keep | super::Strategy::KeepRefresh(_) => "keep",
            super::Strategy::Shift | super::Strategy::ShiftRefresh(_) => "shift",
            _ => continue,
        };
        let (Some(kl), Some(ppl)) = (o.kl_recompute, o.ppl_vs_recompute) else { continue };
        let refresh = match s {
            super::Strategy::KeepRefresh(n) | super::Strategy::ShiftRefresh(n) => match n {
                Some(crate::session::Reach::Tokens(k)) => k,
                Some(crate::session::Reach::Auto) => continue,
                None => {
                    return Err(format!("calibration needs the refresh count in the strategy's name ({}:N)", s.kind()))
                }
            },
            _ => 0,
        };
        let extra_share = o.prefilled.saturating_sub(base.prefilled) as f64 / recompute.prefilled.max(1) as f64;
        candidates.push(Candidate {
            strategy: o.strategy.clone(),
            positions: positions.into(),
            refresh,
            kl_recompute: kl,
            ppl_vs_recompute: ppl,
            extra_share,
            eligible: extra_share <= MAX_EXTRA_SHARE,
        });
    }
    let eligible: Vec<&Candidate> =
        candidates.iter().filter(|c| c.eligible && c.ppl_vs_recompute.is_finite()).collect();
    let best = eligible.iter().map(|c| c.ppl_vs_recompute).fold(f64::INFINITY, f64::min);
    let chosen = eligible
        .iter()
        .filter(|c| c.ppl_vs_recompute <= best * TIE)
        .min_by(|a, b| a.extra_share.total_cmp(&b.extra_share).then(a.kl_recompute.total_cmp(&b.kl_recompute)))
        .ok_or("no in-place strategy with a finite answer perplexity was measured")?;
    let positions = if chosen.positions == "shift" { PositionPolicy::Shift } else { PositionPolicy::Keep };
    Ok(Calibration {
        model: model.into(),
        fingerprint: fingerprint.into(),
        sets: results.iter().map(|r| r.name.clone()).collect(),
        command: command.into(),
        choice: Choice { positions, refresh: chosen.refresh },
        rule: format!(
            "Among keep and shift with and without boundary refresh, those whose refreshes cost at most {:.0}% of the \
             tokens a recompute evaluates: the lowest mean answer perplexity relative to the recompute's; within {:.0}% \
             of it, the cheapest.",
            100.0 * MAX_EXTRA_SHARE,
            100.0 * (TIE - 1.0)
        ),
        candidates,
    })
}

/// Where calibrations are written: `$DECACHE_CALIBRATION_DIR`, else
/// `<user cache>/decache/calibration`.
pub fn dir() -> PathBuf {
    match std::env::var_os(CALIBRATION_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("decache").join("calibration"),
    }
}

/// The file a model's calibration is written to.
pub fn path_for(fingerprint: &str) -> PathBuf {
    dir().join(format!("{fingerprint}.json"))
}

impl Calibration {
    /// Write it where `find` looks first; returns the path.
    pub fn save(&self) -> Result<PathBuf, String> {
        let path = path_for(&self.fingerprint);
        self.save_to(&path)?;
        Ok(path)
    }

    pub fn save_to(&self, path: &Path) -> Result<(), String> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let s = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, s + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Read one, naming the file and the problem.
    pub fn load(path: &Path) -> Result<Calibration, String> {
        let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&s).map_err(|e| format!("{}: not a calibration: {e}", path.display()))
    }
}

/// The calibration of the model file with this fingerprint, from the
/// user's calibrations (`dir()`): `<fingerprint>.json`, else any `.json`
/// there that names the fingerprint (a file copied from the repository's
/// `calibration/` keeps its name). A `<fingerprint>.json` that cannot be
/// read is an error naming the file; other files that are not
/// calibrations are passed over.
pub fn find(fingerprint: &str) -> Result<Option<(Calibration, PathBuf)>, String> {
    find_in(&dir(), fingerprint)
}

/// `find`, with the user's calibrations in `dir`.
pub fn find_in(dir: &Path, fingerprint: &str) -> Result<Option<(Calibration, PathBuf)>, String> {
    let path = dir.join(format!("{fingerprint}.json"));
    if path.exists() {
        let c = Calibration::load(&path)?;
        if c.fingerprint != fingerprint {
            return Err(format!("{}: calibrates model {}, not {fingerprint}", path.display(), c.fingerprint));
        }
        return Ok(Some((c, path)));
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    Ok(files
        .into_iter()
        .find_map(|p| Calibration::load(&p).ok().filter(|c| c.fingerprint == fingerprint).map(|c| (c, p))))
}

/// The position policy and refresh a session runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub positions: PositionPolicy,
    pub refresh: usize,
    /// The calibration `auto` followed, if any, and its file.
    pub from: Option<(Calibration, PathBuf)>,
}

/// What `--positions` and `--refresh` (None: not given) mean for the model
/// file with this fingerprint. `auto` follows its calibration when there is
/// one: `shift` as such, `keep` as `auto` without a calibration does (gaps
/// stay until positions would pass the trained context); the calibrated
/// refresh unless `--refresh` was given, and none for a hybrid model.
/// Without a calibration, or with `keep` or `shift`, the flags stand.
pub fn resolve(
    fingerprint: &str,
    hybrid: bool,
    positions: PositionPolicy,
    refresh: Option<usize>,
) -> Result<Resolved, String> {
    resolve_in(&dir(), fingerprint, hybrid, positions, refresh)
}

/// `resolve`, with the user's calibrations in `dir`.
pub fn resolve_in(
    dir: &Path,
    fingerprint: &str,
    hybrid: bool,
    positions: PositionPolicy,
    refresh: Option<usize>,
) -> Result<Resolved, String> {
    let given = Resolved { positions, refresh: refresh.unwrap_or(0), from: None };
    if positions != PositionPolicy::Auto {
        return Ok(given);
    }
    let Some((c, path)) = find_in(dir, fingerprint)? else { return Ok(given) };
    Ok(Resolved {
        positions: if c.choice.positions == PositionPolicy::Shift {
            PositionPolicy::Shift
        } else {
            PositionPolicy::Auto
        },
        refresh: refresh.unwrap_or(if hybrid { 0 } else { c.choice.refresh }),
        from: Some((c, path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One set: each strategy with its tokens evaluated, KL to recompute and answer PPL.
    fn set(rows: &[(&str, usize, f64, f64)]) -> SetResult {
        let strategies = rows
            .iter()
            .map(|&(name, prefilled, kl, ppl)| super::super::StrategyResult {
                strategy: name.into(),
                turns: vec![super::super::TurnResult {
                    turn: 1,
                    tokens: 100,
                    prefilled,
                    removed: 0,
                    refreshed: 0,
                    compacted: false,
                    ms: 1.0,
                    live: 50,
                    vs_full: None,
                    vs_recompute: Some(super::super::metrics::Comparison { kl, top1: 1.0 }),
                }],
                answer_ppl: ppl,
                summaries: Vec::new(),
            })
            .collect();
        SetResult {
            name: "s".into(),
            description: String::new(),
            turns: 1,
            total_tokens: 100,
            budget: 50,
            decached_by_kind: Vec::new(),
            strategies,
            skipped: Vec::new(),
        }
    }

    #[test]
    fn the_best_answers_within_the_cost_bound_win_and_ties_go_to_the_cheapest() {
        let r = [set(&[
            ("recompute", 1000, 0.0, 10.0),
            ("keep", 500, 0.02, 11.0),
            ("shift", 500, 0.01, 10.5),
            ("shift+refresh:16", 550, 0.005, 10.08),
            ("shift+refresh:64", 590, 0.004, 10.0),
            ("keep+refresh:64", 700, 0.003, 9.0),
        ])];
        let c = calibrate(&r, "m.gguf", "f", "decache eval --calibrate").unwrap();
        // keep+refresh:64 answers best but costs 20% of a recompute.
        assert!(!c.candidates.iter().find(|k| k.strategy == "keep+refresh:64").unwrap().eligible);
        // shift+refresh:16 is within 1% of shift+refresh:64's answers and cheaper.
        assert_eq!(c.choice, Choice { positions: PositionPolicy::Shift, refresh: 16 });
        let k = c.candidates.iter().find(|k| k.strategy == "shift+refresh:16").unwrap();
        assert!((k.extra_share - 0.05).abs() < 1e-9 && (k.ppl_vs_recompute - 1.008).abs() < 1e-9, "{k:?}");
        // Without the reference, or with a refresh whose count is not named: refused.
        assert!(calibrate(&[set(&[("keep", 500, 0.0, 1.0)])], "m", "f", "c").is_err());
        let e = calibrate(
            &[set(&[("recompute", 9, 0.0, 1.0), ("keep", 5, 0.0, 1.0), ("keep+refresh", 6, 0.0, 1.0)])],
            "m",
            "f",
            "c",
        )
        .unwrap_err();
        assert!(e.contains("keep+refresh:N"), "{e}");
    }

    #[test]
    fn auto_follows_a_calibration_and_the_flags_stand_otherwise() {
        let dir = std::env::temp_dir().join(format!("decache-calib-auto-{}", std::process::id()));
        let c = Calibration {
            model: "m.gguf".into(),
            fingerprint: "0123".into(),
            sets: vec!["s".into()],
            command: "c".into(),
            candidates: Vec::new(),
            choice: Choice { positions: PositionPolicy::Shift, refresh: 16 },
            rule: String::new(),
        };
        c.save_to(&dir.join("0123.json")).unwrap();
        let auto = resolve_in(&dir, "0123", false, PositionPolicy::Auto, None).unwrap();
        assert_eq!((auto.positions, auto.refresh), (PositionPolicy::Shift, 16));
        assert_eq!(auto.from.unwrap().1, dir.join("0123.json"));
        assert_eq!(
            resolve_in(&dir, "0123", false, PositionPolicy::Auto, Some(4)).unwrap().refresh,
            4,
            "--refresh wins"
        );
        assert_eq!(
            resolve_in(&dir, "0123", true, PositionPolicy::Auto, None).unwrap().refresh,
            0,
            "no refresh on hybrids"
        );
        let keep = resolve_in(&dir, "0123", false, PositionPolicy::Keep, None).unwrap();
        assert_eq!((keep.positions, keep.refresh, keep.from), (PositionPolicy::Keep, 0, None));
        let other = resolve_in(&dir, "4567", false, PositionPolicy::Auto, None).unwrap();
        assert_eq!((other.positions, other.from), (PositionPolicy::Auto, None));
        // A copy under another name is found by the fingerprint it names.
        let mut other = c.clone();
        other.fingerprint = "cdef".into();
        other.save_to(&dir.join("model-x.json")).unwrap();
        std::fs::write(dir.join("junk.json"), "not json").unwrap();
        let found = resolve_in(&dir, "cdef", false, PositionPolicy::Auto, None).unwrap();
        assert_eq!(found.from.unwrap().1, dir.join("model-x.json"));
        std::fs::write(dir.join("89ab.json"), "not json").unwrap();
        assert!(resolve_in(&dir, "89ab", false, PositionPolicy::Auto, None).unwrap_err().contains("89ab.json"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = std::env::temp_dir().join(format!("decache-calib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.json");
        std::fs::write(&p, "{\"model\": 3}").unwrap();
        let e = Calibration::load(&p).unwrap_err();
        assert!(e.contains("x.json") && e.contains("not a calibration"), "{e}");
        std::fs::write(&p, "{}").unwrap();
        assert!(Calibration::load(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
