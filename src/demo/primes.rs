//! Primality tests behind the demo service.
//!
//! The demo answers "is N prime?" so that requests carry work of very uneven
//! cost: trial division is quick for small or smooth numbers and takes tens of
//! seconds for primes near 2^64, which is exactly the load a parallel pipeline
//! has to spread across workers. Miller-Rabin is offered as the fast
//! alternative that answers any `u64` in microseconds.

use std::fmt;
use std::str::FromStr;

/// How many wheel steps (two divisions each) trial division performs between
/// calls to `interrupted`: rare enough to cost nothing, frequent enough that a
/// cancelled request stops within microseconds.
const STEPS_BETWEEN_INTERRUPT_CHECKS: u32 = 2048;

/// Decides whether `n` is prime by trial division.
///
/// Its cost grows with `sqrt(n)`: that uneven work is what the pipeline exists
/// for. `interrupted` is called every few thousand divisions; as soon as it
/// returns `true` the search is abandoned and `None` is returned. Otherwise the
/// answer is `Some(is_prime)`, correct for every `u64`.
pub fn is_prime_trial_division(n: u64, interrupted: &mut dyn FnMut() -> bool) -> Option<bool> {
    if n < 4 {
        return Some(n >= 2);
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return Some(false);
    }
    // Every prime above 3 is 6k-1 or 6k+1, so only those candidates are tried.
    let mut candidate: u64 = 5;
    let mut steps_until_check = STEPS_BETWEEN_INTERRUPT_CHECKS;
    // `candidate <= n / candidate` is `candidate * candidate <= n` without the
    // overflow the product would hit for n close to 2^64.
    while candidate <= n / candidate {
        if n.is_multiple_of(candidate) || n.is_multiple_of(candidate + 2) {
            return Some(false);
        }
        candidate += 6;
        steps_until_check -= 1;
        if steps_until_check == 0 {
            if interrupted() {
                return None;
            }
            steps_until_check = STEPS_BETWEEN_INTERRUPT_CHECKS;
        }
    }
    Some(true)
}

/// The first twelve primes: as Miller-Rabin witnesses they decide primality
/// for every n below 3.3 * 10^24, which covers all of `u64`.
const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];

/// Decides whether `n` is prime with the deterministic Miller-Rabin test.
///
/// Exact for every `u64` and fast enough that it never needs interrupting.
pub fn is_prime_miller_rabin(n: u64) -> bool {
    // Dividing by the witnesses first settles small n, where a witness could
    // equal n, and cheaply rejects most composites.
    for p in WITNESSES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    if n < 2 {
        return false;
    }
    let twos = (n - 1).trailing_zeros();
    let odd_part = (n - 1) >> twos;
    WITNESSES
        .iter()
        .all(|&witness| passes_round(n, witness, odd_part, twos))
}

/// One Miller-Rabin round for `n - 1 = odd_part * 2^twos`: `false` proves `n`
/// composite.
fn passes_round(n: u64, witness: u64, odd_part: u64, twos: u32) -> bool {
    let mut x = pow_mod(witness, odd_part, n);
    if x == 1 || x == n - 1 {
        return true;
    }
    for _ in 1..twos {
        x = mul_mod(x, x, n);
        if x == n - 1 {
            return true;
        }
    }
    false
}

fn mul_mod(a: u64, b: u64, modulus: u64) -> u64 {
    // The product of two u64 residues needs 128 bits before reduction.
    ((u128::from(a) * u128::from(b)) % u128::from(modulus)) as u64
}

fn pow_mod(mut base: u64, mut exponent: u64, modulus: u64) -> u64 {
    let mut result = 1;
    base %= modulus;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = mul_mod(result, base, modulus);
        }
        base = mul_mod(base, base, modulus);
        exponent >>= 1;
    }
    result
}

/// The primality algorithm a worker runs, chosen on the command line.
///
/// ```
/// use prime_server::demo::primes::Algorithm;
///
/// let algorithm: Algorithm = "miller-rabin".parse().unwrap();
/// assert_eq!(algorithm.to_string(), "miller-rabin");
/// assert_eq!(algorithm.is_prime(97, &mut || false), Some(true));
/// assert_eq!(Algorithm::default(), Algorithm::TrialDivision);
/// assert!("sieve".parse::<Algorithm>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// [`is_prime_trial_division`]: slow, uneven, interruptible.
    #[default]
    TrialDivision,
    /// [`is_prime_miller_rabin`]: fast for every input.
    MillerRabin,
}

impl Algorithm {
    /// Decides whether `n` is prime; `None` only if trial division was
    /// abandoned because `interrupted` returned `true`.
    pub fn is_prime(self, n: u64, interrupted: &mut dyn FnMut() -> bool) -> Option<bool> {
        match self {
            Algorithm::TrialDivision => is_prime_trial_division(n, interrupted),
            Algorithm::MillerRabin => Some(is_prime_miller_rabin(n)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::TrialDivision => "trial-division",
            Algorithm::MillerRabin => "miller-rabin",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Returned when parsing an [`Algorithm`] from a name it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown algorithm {:?}: expected \"trial-division\" or \"miller-rabin\"",
            self.0
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Algorithm::TrialDivision, Algorithm::MillerRabin]
            .into_iter()
            .find(|algorithm| algorithm.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LARGEST_U64_PRIME: u64 = u64::MAX - 58;

    fn never() -> bool {
        false
    }

    fn trial(n: u64) -> bool {
        is_prime_trial_division(n, &mut never).expect("never interrupted")
    }

    #[test]
    fn algorithms_agree_up_to_100_000() {
        for n in 0..=100_000 {
            assert_eq!(trial(n), is_prime_miller_rabin(n), "n = {n}");
        }
    }

    #[test]
    fn known_values() {
        let cases: [(u64, bool); 13] = [
            (0, false),
            (1, false),
            (2, true),
            (3, true),
            (4, false),
            (25, false),
            (49, false),
            ((1 << 31) - 1, true),
            (32_416_190_071, true),
            (32_416_190_073, false),
            (65_521 * 65_519, false),
            (1_000_003 * 1_000_033, false),
            (999_999_937 * 25, false),
        ];
        for (n, expected) in cases {
            assert_eq!(trial(n), expected, "trial division, n = {n}");
            assert_eq!(is_prime_miller_rabin(n), expected, "miller-rabin, n = {n}");
        }
    }

    #[test]
    fn miller_rabin_near_the_top_of_u64() {
        assert!(is_prime_miller_rabin(LARGEST_U64_PRIME));
        assert!(!is_prime_miller_rabin(u64::MAX));
        assert!(!is_prime_miller_rabin(4_294_967_291 * 4_294_967_279));
        assert!(is_prime_miller_rabin(4_294_967_291));
        assert!(is_prime_miller_rabin(4_294_967_279));
    }

    #[test]
    fn trial_division_finds_small_factor_of_u64_max_without_interrupting() {
        let mut calls = 0;
        let result = is_prime_trial_division(u64::MAX, &mut || {
            calls += 1;
            true
        });
        assert_eq!(result, Some(false));
        assert_eq!(calls, 0);
    }

    #[test]
    fn trial_division_stops_when_interrupted() {
        for n in [LARGEST_U64_PRIME, 4_294_967_291 * 4_294_967_279] {
            let mut calls = 0;
            let result = is_prime_trial_division(n, &mut || {
                calls += 1;
                calls == 3
            });
            assert_eq!(result, None, "n = {n}");
            assert_eq!(calls, 3, "n = {n}");
        }
    }

    #[test]
    #[ignore = "about 1.4 * 10^9 divisions; run with --release --ignored"]
    fn trial_division_completes_near_the_top_of_u64() {
        assert!(trial(LARGEST_U64_PRIME));
        assert!(!trial(4_294_967_291 * 4_294_967_279));
    }

    #[test]
    fn prime_counts() {
        let count =
            |limit: u64, test: &dyn Fn(u64) -> bool| (1..=limit).filter(|&n| test(n)).count();
        assert_eq!(count(1_000, &is_prime_miller_rabin), 168);
        assert_eq!(count(1_000, &trial), 168);
        assert_eq!(count(100_000, &trial), 9_592);
        assert_eq!(count(1_000_000, &is_prime_miller_rabin), 78_498);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for algorithm in [Algorithm::TrialDivision, Algorithm::MillerRabin] {
            assert_eq!(algorithm.to_string().parse(), Ok(algorithm));
        }
        assert_eq!(
            "Miller-Rabin".parse::<Algorithm>(),
            Err(UnknownAlgorithm("Miller-Rabin".to_owned()))
        );
    }

    #[test]
    fn algorithm_dispatches() {
        assert_eq!(
            Algorithm::MillerRabin.is_prime(LARGEST_U64_PRIME, &mut || true),
            Some(true)
        );
        assert_eq!(
            Algorithm::TrialDivision.is_prime(LARGEST_U64_PRIME, &mut || true),
            None
        );
        assert_eq!(
            Algorithm::TrialDivision.is_prime(7_919, &mut never),
            Some(true)
        );
    }

    proptest! {
        #[test]
        fn agree_on_u32(n in any::<u32>()) {
            prop_assert_eq!(trial(u64::from(n)), is_prime_miller_rabin(u64::from(n)));
        }

        #[test]
        fn agree_below_2_pow_40(n in 0u64..(1 << 40)) {
            prop_assert_eq!(trial(n), is_prime_miller_rabin(n));
        }
    }
}
