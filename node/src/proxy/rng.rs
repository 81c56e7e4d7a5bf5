//! Random numbers for the request path: request ids and the two candidates of an endpoint
//! choice.
//!
//! `rand::random` draws from `ThreadRng`, a reseeding ChaCha12 generator built for secrets, and
//! cost more per request than choosing the endpoint itself. These numbers need to be well
//! spread and unique, not secret, so each thread has a xoshiro256++ generator (`SmallRng`)
//! seeded once from the operating system.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_entropy());
}

/// A random value of any type `rand` can draw.
pub fn random<T>() -> T
where
    rand::distributions::Standard: rand::distributions::Distribution<T>,
{
    RNG.with(|rng| rng.borrow_mut().gen())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ_within_and_across_threads() {
        let here: Vec<u128> = (0..64).map(|_| super::random()).collect();
        let there: Vec<u128> =
            std::thread::spawn(|| (0..64).map(|_| super::random()).collect()).join().expect("thread");
        let mut all: Vec<u128> = here.into_iter().chain(there).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 128, "every draw differs");
    }
}
