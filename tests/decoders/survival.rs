//! Survival: no decoder panics, and the per-input invariants of `fuzz/harness.rs` hold.

use super::*;

#[test]
fn every_decoder_survives_random_bytes() {
    let started = Instant::now();
    let mut rng = rng(1);
    let mut runs = 0;
    for family in FAMILIES {
        for _ in 0..cases(4000) {
            let input = random_input(&mut rng);
            run_logged(family, &input);
            runs += 1;
        }
    }
    report("random bytes", runs, started);
}

#[test]
fn every_decoder_survives_mutated_reference_samples() {
    let started = Instant::now();
    let mut rng = rng(2);
    let mut runs = 0;
    for family in FAMILIES {
        let seeds = seeds(family.name);
        let donors: Vec<Vec<u8>> = seeds.iter().map(|(_, bytes)| bytes.clone()).collect();
        for _ in 0..cases(2500) {
            let (_, original) = pick(&mut rng, &seeds);
            let mut input = match std::str::from_utf8(original)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
            {
                Some(value) => {
                    let mut tree = J::from_value(&value);
                    for _ in 0..rng.usize(1..4) {
                        mutate_json(&mut rng, &mut tree);
                    }
                    let style = Style::random(&mut rng);
                    tree.emit(&mut rng, style).into_bytes()
                }
                None => original.clone(),
            };
            // Half the structural mutants, and every non-JSON sample, also get byte damage.
            if rng.bool() || input == *original {
                for _ in 0..rng.usize(1..5) {
                    mutate_bytes(&mut rng, &mut input, &donors);
                }
            }
            run_logged(family, &input);
            runs += 1;
        }
    }
    report("mutated samples", runs, started);
}

#[test]
fn every_decoder_survives_pathological_values_at_every_node() {
    let started = Instant::now();
    let mut rng = rng(3);
    let values = pathological_values();
    let mut runs = 0;
    for family in FAMILIES {
        // Alone, as the whole body.
        for value in &values {
            run_logged(family, value.emit(&mut rng, Style::COMPACT).as_bytes());
            runs += 1;
        }
        // And in place of each node of each JSON sample, the frame around it intact.
        for (_, bytes) in seeds(family.name) {
            let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let tree = J::from_value(&value);
            for path in tree.paths() {
                // Every kind of value at every node, but only a few of the numbers, which all
                // take the same paths in a decoder once the first few have been seen there.
                let numbers = values.iter().filter(|v| matches!(v, J::Num(_)));
                let sampled: Vec<&J> = numbers.filter(|_| rng.u8(..5) == 0).collect();
                let others = values.iter().filter(|v| !matches!(v, J::Num(_)));
                for value in others.chain(sampled) {
                    let mut copy = tree.clone();
                    *copy.at_mut(&path) = value.clone();
                    run_logged(family, copy.emit(&mut rng, Style::COMPACT).as_bytes());
                    runs += 1;
                }
            }
        }
    }
    report("pathological values", runs, started);
}

/// Run a family, saying which input made it panic (the panic message alone would not).
fn run_logged(family: &Family, input: &[u8]) {
    struct Guard<'a>(&'a Family, &'a [u8]);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let shown: String = String::from_utf8_lossy(self.1).chars().take(2000).collect();
                eprintln!("{} failed on input {shown:?}", self.0.name);
            }
        }
    }
    let _guard = Guard(family, input);
    harness::run(family, input);
}
