//! Choosing which member serves a call: filters, balancers, ejection of failing
//! endpoints, and the retry budget.
//!
//! Everything here is logic without I/O: the current time is passed in and randomness
//! comes from the caller's generator, so the client stays thin and tests are exact.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::{Rng, RngExt};

/// The strategy a client uses to spread calls over the members that serve a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balancer {
    /// Picks two members at random and calls the less loaded one, judged by this
    /// client's own calls in flight plus the load each member gossips. The default: it
    /// avoids both hot spots and the herding of always picking the least loaded.
    #[default]
    PowerOfTwo,
    /// Rotates through the members, sorted by name, one call at a time.
    RoundRobin,
    /// Picks uniformly at random.
    Random,
    /// Rendezvous hashing on the call's key: the same key goes to the same member while
    /// it serves, and only keys of a member that leaves move. Calls without a key are
    /// spread at random.
    Rendezvous,
}

impl std::str::FromStr for Balancer {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "p2c" | "power-of-two" => Ok(Balancer::PowerOfTwo),
            "round-robin" => Ok(Balancer::RoundRobin),
            "random" => Ok(Balancer::Random),
            "rendezvous" => Ok(Balancer::Rendezvous),
            other => Err(format!(
                "invalid balancer {other:?}: expected p2c, round-robin, random or rendezvous"
            )),
        }
    }
}

/// One member a call could go to, with the figures the balancer compares.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The member's name, unique in the cluster.
    pub name: String,
    /// The member's node id text, the input of rendezvous hashing.
    pub node_id: String,
    /// The load the member gossips: its calls in flight over its capacity.
    pub gossiped_load: f64,
    /// This client's own calls in flight to the member.
    pub in_flight: usize,
}

/// How much one unit of gossiped load (a member at capacity) weighs against this
/// client's own calls in flight when comparing two members.
const GOSSIPED_LOAD_WEIGHT: f64 = 16.0;

/// The balancer's memory between calls: the round-robin position.
#[derive(Debug, Default)]
pub struct BalancerState {
    next: usize,
}

impl Balancer {
    /// Returns the index in `candidates` of the member to call, or `None` when there
    /// are no candidates. `candidates` must be sorted by name for round robin to rotate
    /// in a stable order.
    pub fn pick(
        self,
        candidates: &[Candidate],
        key: Option<&[u8]>,
        state: &mut BalancerState,
        rng: &mut impl Rng,
    ) -> Option<usize> {
        match candidates.len() {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        let index = match self {
            Balancer::PowerOfTwo => {
                let first = rng.random_range(0..candidates.len());
                let mut second = rng.random_range(0..candidates.len() - 1);
                if second >= first {
                    second += 1;
                }
                if score(&candidates[second]) < score(&candidates[first]) {
                    second
                } else {
                    first
                }
            }
            Balancer::RoundRobin => {
                let index = state.next % candidates.len();
                state.next = state.next.wrapping_add(1);
                index
            }
            Balancer::Random => rng.random_range(0..candidates.len()),
            Balancer::Rendezvous => match key {
                Some(key) => rendezvous(candidates, key),
                None => rng.random_range(0..candidates.len()),
            },
        };
        Some(index)
    }
}

fn score(candidate: &Candidate) -> f64 {
    candidate.in_flight as f64 + candidate.gossiped_load * GOSSIPED_LOAD_WEIGHT
}

fn rendezvous(candidates: &[Candidate], key: &[u8]) -> usize {
    let weight = |candidate: &Candidate| {
        let mut hasher = blake3::Hasher::new();
        hasher.update(key);
        hasher.update(&[0]);
        hasher.update(candidate.node_id.as_bytes());
        hasher.update(candidate.name.as_bytes());
        let hash = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    };
    candidates
        .iter()
        .enumerate()
        .max_by_key(|(_, candidate)| weight(candidate))
        .map(|(index, _)| index)
        .unwrap_or(0)
}

/// Keeps endpoints that keep failing at the transport level out of rotation for a
/// while. Application errors are not reported here, so they never eject a member.
#[derive(Debug)]
pub struct Ejector {
    failures_to_eject: u32,
    base: Duration,
    max: Duration,
    endpoints: HashMap<String, EjectionState>,
}

#[derive(Debug, Default)]
struct EjectionState {
    consecutive_failures: u32,
    times_ejected: u32,
    until: Option<Instant>,
}

impl Default for Ejector {
    /// Ejects after 3 consecutive transport failures, for 2 s doubling with each
    /// ejection in a row up to 30 s.
    fn default() -> Self {
        Self::new(3, Duration::from_secs(2), Duration::from_secs(30))
    }
}

impl Ejector {
    /// Ejects an endpoint after `failures_to_eject` transport failures in a row, for
    /// `base` doubled with each ejection in a row, at most `max`.
    pub fn new(failures_to_eject: u32, base: Duration, max: Duration) -> Self {
        Self {
            failures_to_eject: failures_to_eject.max(1),
            base,
            max,
            endpoints: HashMap::new(),
        }
    }

    /// Whether `endpoint` is out of rotation at `now`.
    pub fn is_ejected(&self, endpoint: &str, now: Instant) -> bool {
        self.endpoints
            .get(endpoint)
            .and_then(|state| state.until)
            .is_some_and(|until| now < until)
    }

    /// Records a call that reached the endpoint and got a reply, whatever its code.
    pub fn record_success(&mut self, endpoint: &str) {
        if let Some(state) = self.endpoints.get_mut(endpoint) {
            state.consecutive_failures = 0;
            state.times_ejected = 0;
            state.until = None;
        }
    }

    /// Records a transport failure; returns `true` when it ejects the endpoint.
    pub fn record_failure(&mut self, endpoint: &str, now: Instant) -> bool {
        let state = self.endpoints.entry(endpoint.to_string()).or_default();
        state.consecutive_failures += 1;
        if state.consecutive_failures < self.failures_to_eject {
            return false;
        }
        let factor = 2u32.saturating_pow(state.times_ejected.min(16));
        let duration = self.base.saturating_mul(factor).min(self.max);
        state.until = Some(now + duration);
        state.times_ejected += 1;
        state.consecutive_failures = 0;
        true
    }

    /// Forgets endpoints that are no longer in the catalog.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.endpoints.retain(|endpoint, _| keep(endpoint));
    }
}

/// Limits retries to a share of calls, so that a failing cluster is not flooded: each
/// call earns `ratio` of a retry, each retry spends one, and a small allowance per
/// second lets a client with few calls still retry.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    per_second: f64,
    max_balance: f64,
    balance: f64,
    last_refill: Instant,
}

impl RetryBudget {
    /// A budget of `ratio` retries per call plus `per_second` retries each second, never
    /// saving more than `max_balance`.
    pub fn new(ratio: f64, per_second: f64, max_balance: f64, now: Instant) -> Self {
        Self {
            ratio,
            per_second,
            max_balance,
            balance: max_balance,
            last_refill: now,
        }
    }

    /// Records a first attempt.
    pub fn deposit(&mut self) {
        self.balance = (self.balance + self.ratio).min(self.max_balance);
    }

    /// Takes one retry from the budget if there is one.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.last_refill = now;
        self.balance = (self.balance + elapsed * self.per_second).min(self.max_balance);
        if self.balance >= 1.0 {
            self.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for RetryBudget {
    /// 20 % of calls, plus 10 retries a second, saving at most 100.
    fn default() -> Self {
        Self::new(0.2, 10.0, 100.0, Instant::now())
    }
}

/// The pause before retry number `attempt` (1 for the first retry): exponential from
/// `base`, capped at `max`, with full jitter so that retries from many clients spread.
pub fn backoff(attempt: u32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn candidates(count: usize) -> Vec<Candidate> {
        (0..count)
            .map(|index| Candidate {
                name: format!("n{index}"),
                node_id: format!("id{index}"),
                gossiped_load: 0.0,
                in_flight: 0,
            })
            .collect()
    }

    fn counts(balancer: Balancer, list: &[Candidate], calls: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = BalancerState::default();
        let mut counts = vec![0; list.len()];
        for _ in 0..calls {
            counts[balancer.pick(list, None, &mut state, &mut rng).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_rotates_call_by_call() {
        let list = candidates(3);
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = BalancerState::default();
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                Balancer::RoundRobin
                    .pick(&list, None, &mut state, &mut rng)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_spreads_evenly() {
        let counts = counts(Balancer::Random, &candidates(4), 40_000);
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{count}");
        }
    }

    #[test]
    fn power_of_two_avoids_the_loaded_member() {
        let mut list = candidates(3);
        list[0].gossiped_load = 1.0;
        list[1].in_flight = 5;
        let counts = counts(Balancer::PowerOfTwo, &list, 3_000);
        // The idle member wins every pairing it is in: two of three pairs.
        assert!(counts[2] > 1_800, "{counts:?}");
        assert!(counts[1] > counts[0], "{counts:?}");
    }

    #[test]
    fn power_of_two_spreads_equal_members() {
        let counts = counts(Balancer::PowerOfTwo, &candidates(3), 30_000);
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{count}");
        }
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_leavers_keys() {
        let list = candidates(5);
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = BalancerState::default();
        let mut pick = |list: &[Candidate], key: &str| {
            let index = Balancer::Rendezvous
                .pick(list, Some(key.as_bytes()), &mut state, &mut rng)
                .unwrap();
            list[index].name.clone()
        };
        let keys: Vec<String> = (0..500).map(|index| format!("user-{index}")).collect();
        let before: Vec<String> = keys.iter().map(|key| pick(&list, key)).collect();
        let again: Vec<String> = keys.iter().map(|key| pick(&list, key)).collect();
        assert_eq!(before, again);

        let without_n2: Vec<Candidate> = list.iter().filter(|c| c.name != "n2").cloned().collect();
        for (key, owner) in keys.iter().zip(&before) {
            let now = pick(&without_n2, key);
            if owner != "n2" {
                assert_eq!(&now, owner, "key {key} moved although its member stayed");
            }
        }
    }

    #[test]
    fn ejector_ejects_after_consecutive_failures_and_backs_off() {
        let mut ejector = Ejector::new(3, Duration::from_secs(2), Duration::from_secs(5));
        let start = Instant::now();
        assert!(!ejector.record_failure("a", start));
        assert!(!ejector.record_failure("a", start));
        assert!(ejector.record_failure("a", start));
        assert!(ejector.is_ejected("a", start + Duration::from_secs(1)));
        assert!(!ejector.is_ejected("a", start + Duration::from_secs(3)));

        let later = start + Duration::from_secs(3);
        for _ in 0..3 {
            ejector.record_failure("a", later);
        }
        assert!(ejector.is_ejected("a", later + Duration::from_secs(3)));
        assert!(!ejector.is_ejected("a", later + Duration::from_secs(5)));
    }

    #[test]
    fn ejector_success_resets_the_count() {
        let mut ejector = Ejector::default();
        let now = Instant::now();
        ejector.record_failure("a", now);
        ejector.record_failure("a", now);
        ejector.record_success("a");
        assert!(!ejector.record_failure("a", now));
        assert!(!ejector.is_ejected("a", now));
    }

    #[test]
    fn retry_budget_limits_retries_to_a_share_of_calls() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(0.2, 0.0, 10.0, start);
        let mut granted = 0;
        for _ in 0..1_000 {
            budget.deposit();
            if budget.try_withdraw(start) {
                granted += 1;
            }
        }
        // The initial balance of 10, then one retry per five calls at most.
        assert!(granted <= 10 + 200, "{granted}");
        assert!(granted >= 200, "{granted}");

        let mut empty = RetryBudget::new(0.0, 0.0, 10.0, start);
        for _ in 0..10 {
            assert!(empty.try_withdraw(start));
        }
        assert!(!empty.try_withdraw(start));
    }

    #[test]
    fn retry_budget_refills_over_time() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(0.0, 10.0, 10.0, start);
        for _ in 0..10 {
            assert!(budget.try_withdraw(start));
        }
        assert!(!budget.try_withdraw(start));
        assert!(budget.try_withdraw(start + Duration::from_millis(150)));
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let mut rng = StdRng::seed_from_u64(3);
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(200);
        for attempt in 1..20 {
            let pause = backoff(attempt, base, max, &mut rng);
            let ceiling = (base * 2u32.pow((attempt - 1).min(10))).min(max);
            assert!(pause <= ceiling, "attempt {attempt}: {pause:?}");
        }
    }

    #[test]
    fn balancer_names_parse() {
        assert_eq!("round-robin".parse(), Ok(Balancer::RoundRobin));
        assert!(
            "fastest"
                .parse::<Balancer>()
                .unwrap_err()
                .contains("fastest")
        );
    }
}
