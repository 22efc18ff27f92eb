//! The signing schedule as a pure function of the `signing_keys` rows and the time.
//!
//! Every instance derives the same states from the same rows, so they agree on which key signs
//! without talking to each other: the newest key whose `activates_at` has come is `active`; a
//! later one is `next` (published, not signing); an older one is `retiring` (published so that
//! the tokens it signed still verify) until its `retires_at`, then `retired` (not published).

use serde::Serialize;

/// A key's place in the schedule (SPEC: `truxectl keys list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Next,
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }

    /// Whether the JWKS lists the key.
    pub fn is_published(self) -> bool {
        self != KeyState::Retired
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The times of one row that decide its state (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTimes {
    pub kid: String,
    pub activates_at: i64,
    pub retires_at: Option<i64>,
    /// Stamped once someone saw `retires_at` pass; a retired key never comes back.
    pub retired_at: Option<i64>,
}

/// The timing rules, in seconds, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `JWT_KEY_PUBLISH_DELAY`: a new key is published this long before it signs.
    pub publish_delay: i64,
    /// The longest lifetime of a token a key signs: `ACCESS_TOKEN_EXPIRY` (ID tokens expire with
    /// their access token; refresh tokens are opaque and signed by nobody).
    pub token_lifetime: i64,
    /// Added to the token lifetime before a key retires: covers clocks of instances that differ.
    pub margin: i64,
    /// `JWT_KEY_ROTATION`: how long a key signs before the next takes over; `None`: no schedule.
    pub rotation: Option<i64>,
}

/// The most the clock part of the retirement margin grows to; it is the publish delay when that
/// is shorter (tests).
pub const MAX_RETIRE_MARGIN: i64 = 60;

/// Added to every margin: times are whole seconds, and an instance may read the table up to a
/// publish delay late (see `KeySet::signer`) before it stops signing.
pub const SECONDS_SLOP: i64 = 2;

impl Timing {
    /// The margin rule in one place: the publish delay, at most [`MAX_RETIRE_MARGIN`], plus
    /// [`SECONDS_SLOP`].
    pub fn new(publish_delay: i64, token_lifetime: i64, rotation: Option<i64>) -> Self {
        let margin = publish_delay.min(MAX_RETIRE_MARGIN) + SECONDS_SLOP;
        Self { publish_delay, token_lifetime, margin, rotation }
    }

    /// When a key whose successor activates at `successor_activates_at` may leave the JWKS: after
    /// the last token it signed expired.
    pub fn retire_after(&self, successor_activates_at: i64) -> i64 {
        successor_activates_at.saturating_add(self.token_lifetime).saturating_add(self.margin)
    }
}

pub fn is_retired(key: &KeyTimes, now: i64) -> bool {
    key.retired_at.is_some() || key.retires_at.is_some_and(|at| at <= now)
}

/// The order of the schedule: by activation, ties (two instances bootstrapping together) by kid.
fn order_key(key: &KeyTimes) -> (i64, &str) {
    (key.activates_at, key.kid.as_str())
}

/// The index of the active key at `now`: the newest activated key not retired.
pub fn active_index(keys: &[KeyTimes], now: i64) -> Option<usize> {
    keys.iter()
        .enumerate()
        .filter(|(_, k)| !is_retired(k, now) && k.activates_at <= now)
        .max_by(|(_, a), (_, b)| order_key(a).cmp(&order_key(b)))
        .map(|(i, _)| i)
}

/// The state of every key at `now`, in the order given.
pub fn states(keys: &[KeyTimes], now: i64) -> Vec<KeyState> {
    let active = active_index(keys, now);
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            if is_retired(k, now) {
                KeyState::Retired
            } else if k.activates_at > now {
                KeyState::Next
            } else if Some(i) == active {
                KeyState::Active
            } else {
                KeyState::Retiring
            }
        })
        .collect()
}

/// The `retires_at` each key needs now that its successor is known: `(index, at)` for every key
/// not yet retired whose stored value is missing or earlier. Only ever later: instances (or the
/// CLI) with a longer `ACCESS_TOKEN_EXPIRY` push it out, none pulls it in.
pub fn retirements(keys: &[KeyTimes], timing: &Timing, now: i64) -> Vec<(usize, i64)> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| order_key(&keys[a]).cmp(&order_key(&keys[b])));
    order
        .windows(2)
        .filter_map(|pair| {
            let (key, successor) = (&keys[pair[0]], &keys[pair[1]]);
            let needed = timing.retire_after(successor.activates_at);
            let missing = key.retires_at.is_none_or(|at| at < needed);
            (missing && !is_retired(key, now)).then_some((pair[0], needed))
        })
        .collect()
}

/// Whether the schedule (`JWT_KEY_ROTATION`) asks for a next key at `now`: the active key has
/// signed for the rotation period less the publish delay (so that the next one takes over when
/// the period is up) and no next key is published yet.
pub fn rotation_due(keys: &[KeyTimes], timing: &Timing, now: i64) -> bool {
    let Some(period) = timing.rotation else {
        return false;
    };
    let Some(active) = active_index(keys, now) else {
        return false;
    };
    let next_exists = keys.iter().any(|k| !is_retired(k, now) && k.activates_at > now);
    !next_exists && now >= keys[active].activates_at.saturating_add(period).saturating_sub(timing.publish_delay)
}

/// Which key an instance signs with, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The schedule's active key.
    Active(usize),
    /// This instance does not hold the active key's private half (another instance's
    /// `JWT_PRIVATE_KEY`, or a key it cannot decrypt); it signs with the newest key it holds that
    /// every instance still publishes for as long as the token lives.
    Fallback { used: usize, active: usize },
}

impl Choice {
    pub fn index(self) -> usize {
        match self {
            Choice::Active(i) | Choice::Fallback { used: i, .. } => i,
        }
    }
}

/// Why an instance has no key to sign with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoSigner {
    #[error("no signing key is active yet")]
    NoActiveKey,
    #[error(
        "the active signing key {active} is not held by this instance (another instance's JWT_PRIVATE_KEY, or a \
         generated key it cannot decrypt), and no key it holds stays published long enough"
    )]
    NotHeld { active: String },
    #[error(
        "this instance has not read the signing keys from the database for {stale_for}s (the publish delay is \
         {publish_delay}s): it could sign with a key the others no longer publish"
    )]
    Stale { stale_for: i64, publish_delay: i64 },
}

/// The key to sign with at `now`: the active key if this instance holds it, else the newest
/// activated key it holds. Either way the key is published (not retired) and stays so for the
/// token's whole lifetime, so every instance's JWKS verifies the token until it expires.
pub fn choose_signer(
    keys: &[KeyTimes],
    can_sign: impl Fn(usize) -> bool,
    timing: &Timing,
    now: i64,
) -> Result<Choice, NoSigner> {
    let active = active_index(keys, now).ok_or(NoSigner::NoActiveKey)?;
    let lasts = |k: &KeyTimes| k.retires_at.is_none_or(|at| at >= now.saturating_add(timing.token_lifetime));
    let usable = |i: usize| {
        let k = &keys[i];
        !is_retired(k, now) && k.activates_at <= now && lasts(k) && can_sign(i)
    };
    if usable(active) {
        return Ok(Choice::Active(active));
    }
    (0..keys.len())
        .filter(|&i| usable(i))
        .max_by(|&a, &b| order_key(&keys[a]).cmp(&order_key(&keys[b])))
        .map(|used| Choice::Fallback { used, active })
        .ok_or_else(|| NoSigner::NotHeld { active: keys[active].kid.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, activates_at: i64, retires_at: Option<i64>) -> KeyTimes {
        KeyTimes { kid: kid.to_string(), activates_at, retires_at, retired_at: None }
    }

    /// Delay 100 s, tokens 50 s, so the margin is 62 s.
    fn timing(rotation: Option<i64>) -> Timing {
        Timing::new(100, 50, rotation)
    }

    #[test]
    fn margin_is_the_delay_up_to_a_minute() {
        assert_eq!(Timing::new(2, 10, None).margin, 4);
        assert_eq!(Timing::new(3_600, 900, None).margin, 62);
        assert_eq!(Timing::new(3_600, 900, None).retire_after(10_000), 10_000 + 900 + 62);
    }

    #[test]
    fn one_rotation_from_publication_to_retirement() {
        // "old" active since 0; "new" published at 1000, activating at 1100; old retires at
        // 1100 + 50 + 62.
        let mut keys = vec![key("old", 0, None), key("new", 1_100, None)];
        let t = timing(None);
        assert_eq!(retirements(&keys, &t, 1_000), vec![(0, 1_212)]);
        keys[0].retires_at = Some(1_212);
        assert_eq!(retirements(&keys, &t, 1_000), vec![], "nothing more to do");
        use KeyState::*;
        for (now, expected) in [
            (1_000, [Active, Next]),
            (1_099, [Active, Next]),
            (1_100, [Retiring, Active]),
            (1_211, [Retiring, Active]),
            (1_212, [Retired, Active]),
        ] {
            assert_eq!(states(&keys, now), expected, "at {now}");
        }
        assert_eq!(active_index(&keys, 1_099), Some(0));
        assert_eq!(active_index(&keys, 1_100), Some(1));
    }

    #[test]
    fn retirement_only_moves_later() {
        let keys = vec![key("old", 0, Some(5_000)), key("new", 1_100, None)];
        assert_eq!(retirements(&keys, &timing(None), 1_000), vec![], "a later stored time stays");
        let keys = vec![key("old", 0, Some(1_150)), key("new", 1_100, None)];
        assert_eq!(retirements(&keys, &timing(None), 1_000), vec![(0, 1_212)], "an earlier one is pushed out");
        let mut retired = key("old", 0, Some(1_150));
        retired.retired_at = Some(1_150);
        assert_eq!(retirements(&[retired, key("new", 1_100, None)], &timing(None), 2_000), vec![]);
    }

    #[test]
    fn ties_are_broken_by_kid_the_same_everywhere() {
        let keys = vec![key("b", 10, None), key("a", 10, None)];
        assert_eq!(active_index(&keys, 10), Some(0));
        assert_eq!(states(&keys, 10), [KeyState::Active, KeyState::Retiring]);
        assert_eq!(retirements(&keys, &timing(None), 10), vec![(1, 10 + 112)]);
    }

    #[test]
    fn an_env_key_added_later_supersedes_the_older_keys() {
        // An operator swaps JWT_PRIVATE_KEY: the new one is active at once, the old one retires
        // after its tokens expired, instead of staying published for ever.
        let keys = vec![key("env-1", 0, None), key("env-2", 500, None)];
        assert_eq!(retirements(&keys, &timing(None), 500), vec![(0, 612)]);
    }

    #[test]
    fn the_schedule_asks_for_a_next_key_one_delay_before_the_period_ends() {
        let t = timing(Some(1_000));
        let keys = vec![key("a", 0, None)];
        assert!(!rotation_due(&keys, &t, 899));
        assert!(rotation_due(&keys, &t, 900));
        assert!(rotation_due(&keys, &t, 5_000), "overdue (the servers were down) is due at once");
        assert!(!rotation_due(&keys, &timing(None), 5_000), "no schedule");
        let with_next = vec![key("a", 0, None), key("b", 1_000, None)];
        assert!(!rotation_due(&with_next, &t, 950), "a next key is already published");
        assert!(!rotation_due(&with_next, &t, 1_000), "b is active now, its period just began");
        assert!(rotation_due(&with_next, &t, 1_900));
        assert!(!rotation_due(&[], &t, 5_000), "nothing active: the start-up makes the first key");
    }

    #[test]
    fn an_instance_signs_with_the_active_key_when_it_holds_it() {
        let keys = vec![key("old", 0, Some(1_210)), key("new", 1_100, None)];
        let t = timing(None);
        assert_eq!(choose_signer(&keys, |_| true, &t, 1_099), Ok(Choice::Active(0)));
        assert_eq!(choose_signer(&keys, |_| true, &t, 1_100), Ok(Choice::Active(1)));
        assert_eq!(choose_signer(&[], |_| true, &t, 0), Err(NoSigner::NoActiveKey));
        let only_next = vec![key("n", 100, None)];
        assert_eq!(choose_signer(&only_next, |_| true, &t, 50), Err(NoSigner::NoActiveKey));
    }

    #[test]
    fn a_fallback_key_must_stay_published_for_the_whole_token_lifetime() {
        // "theirs" is active but held elsewhere; "mine" retires at 1_210.
        let keys = vec![key("mine", 0, Some(1_210)), key("theirs", 1_100, None)];
        let mine_only = |i: usize| i == 0;
        let t = timing(None);
        assert_eq!(choose_signer(&keys, mine_only, &t, 1_100), Ok(Choice::Fallback { used: 0, active: 1 }));
        assert_eq!(choose_signer(&keys, mine_only, &t, 1_160), Ok(Choice::Fallback { used: 0, active: 1 }));
        assert_eq!(
            choose_signer(&keys, mine_only, &t, 1_161),
            Err(NoSigner::NotHeld { active: "theirs".into() }),
            "a token signed now (50 s) would outlive the key's publication"
        );
        assert_eq!(choose_signer(&keys, |_| false, &t, 1_100), Err(NoSigner::NotHeld { active: "theirs".into() }));
        // A next key is never a fallback: nobody may sign before its activation.
        let keys = vec![key("theirs", 0, None), key("mine-next", 2_000, None)];
        assert_eq!(choose_signer(&keys, |i| i == 1, &t, 1_000), Err(NoSigner::NotHeld { active: "theirs".into() }));
    }

    #[test]
    fn a_retired_key_neither_signs_nor_is_published() {
        let mut old = key("old", 0, Some(100));
        old.retired_at = Some(100);
        let keys = vec![old, key("new", 50, None)];
        assert_eq!(states(&keys, 60), [KeyState::Retired, KeyState::Active], "retired_at is final");
        assert_eq!(
            choose_signer(&keys, |i| i == 0, &timing(None), 60),
            Err(NoSigner::NotHeld { active: "new".into() })
        );
        assert!(!KeyState::Retired.is_published() && KeyState::Next.is_published());
    }
}
