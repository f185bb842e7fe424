//! A small deterministic PRNG (xoshiro256**, seeded through splitmix64) and the distributions
//! the simulator needs. Our own so the simulator depends on nothing beyond serde/toml.

pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box-Muller; the second value is dropped for simplicity).
    pub fn normal(&mut self) -> f64 {
        // 1 - uniform() is in (0, 1], so ln() is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and log-space standard deviation.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson-distributed count with mean `lambda` (Knuth for small means, normal beyond).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.uniform();
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// `bytes` random bytes as lowercase hex, never all zero (W3C trace context forbids it).
    pub fn hex_id(&mut self, bytes: usize) -> String {
        loop {
            let mut s = String::with_capacity(bytes * 2);
            let mut all_zero = true;
            for _ in 0..bytes {
                let b = (self.next_u64() & 0xff) as u8;
                all_zero &= b == 0;
                s.push_str(&format!("{b:02x}"));
            }
            if !all_zero {
                return s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_roughly_flat() {
        let mut r = Rng::new(1);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((9_000..11_000).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn lognormal_median_and_spread() {
        let mut r = Rng::new(7);
        let mut v: Vec<f64> = (0..50_001).map(|_| r.lognormal(20.0, 0.5)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[25_000];
        assert!((19.0..21.0).contains(&median), "median {median}");
        // p84 of a log-normal is median * e^sigma.
        let p84 = v[42_068];
        assert!((31.0..35.0).contains(&p84), "p84 {p84}");
    }

    #[test]
    fn poisson_mean_small_and_large() {
        let mut r = Rng::new(3);
        for lambda in [0.2, 4.0, 100.0] {
            let n = 20_000;
            let mean = (0..n).map(|_| r.poisson(lambda) as f64).sum::<f64>() / n as f64;
            assert!(
                (mean - lambda).abs() < lambda * 0.05 + 0.02,
                "{lambda}: {mean}"
            );
        }
        assert_eq!(r.poisson(0.0), 0);
    }

    #[test]
    fn hex_ids_have_the_w3c_shape() {
        let mut r = Rng::new(9);
        let t = r.hex_id(16);
        let s = r.hex_id(8);
        assert_eq!(t.len(), 32);
        assert_eq!(s.len(), 16);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(t, "0".repeat(32));
    }

    #[test]
    fn same_seed_same_stream() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
