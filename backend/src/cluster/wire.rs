//! How a [`Partial`] travels through Redis: a small JSON object whose
//! floating-point sums are sent as their IEEE-754 bits, so every instance
//! adds exactly the numbers the sender computed (a decimal round trip could
//! move the last bit, and the combine must be bit-identical everywhere).

use super::combine::Partial;
use serde::{Deserialize, Serialize};

/// The wire form of a partial; field names are short because one goes out
/// per instance, room and tick.
#[derive(Debug, Serialize, Deserialize)]
struct WirePartial {
    /// Instance id.
    i: String,
    /// Tick.
    k: u64,
    /// Σ cos, as bits.
    c: u64,
    /// Σ sin, as bits.
    s: u64,
    /// Voters.
    v: u32,
    /// Σ bpm, as bits.
    b: u64,
    /// Hearts.
    h: u32,
    /// Love total.
    l: u64,
}

/// Why a message on a room's channel was not a partial.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not the JSON of a partial.
    #[error("not a partial: {0}")]
    Json(#[from] serde_json::Error),
    /// A sum that is not a finite number.
    #[error("a partial with a sum that is not finite")]
    NotFinite,
}

/// The bytes published for `partial`.
pub fn encode(partial: &Partial) -> Vec<u8> {
    let wire = WirePartial {
        i: partial.instance.clone(),
        k: partial.tick,
        c: partial.sum_cos.to_bits(),
        s: partial.sum_sin.to_bits(),
        v: partial.voters,
        b: partial.sum_bpm.to_bits(),
        h: partial.hearts,
        l: partial.love,
    };
    // Serializing a struct of strings and integers cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// The partial in `bytes`, checked: a sum that is not finite would poison
/// the room's consensus on every instance.
pub fn decode(bytes: &[u8]) -> Result<Partial, WireError> {
    let wire: WirePartial = serde_json::from_slice(bytes)?;
    let partial = Partial {
        instance: wire.i,
        tick: wire.k,
        sum_cos: f64::from_bits(wire.c),
        sum_sin: f64::from_bits(wire.s),
        voters: wire.v,
        sum_bpm: f64::from_bits(wire.b),
        hearts: wire.h,
        love: wire.l,
    };
    if [partial.sum_cos, partial.sum_sin, partial.sum_bpm].iter().all(|x| x.is_finite()) {
        Ok(partial)
    } else {
        Err(WireError::NotFinite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_partial_round_trips_bit_for_bit(
            cos in -1e6..1e6f64, sin in -1e6..1e6f64, bpm in 0.0..1e7f64,
            voters in any::<u32>(), hearts in any::<u32>(), love in any::<u64>(), tick in any::<u64>(),
        ) {
            let p = Partial { instance: "host-1-abc".into(), tick, sum_cos: cos, sum_sin: sin, voters, sum_bpm: bpm, hearts, love };
            let back = decode(&encode(&p)).expect("decodes");
            prop_assert_eq!(back.sum_cos.to_bits(), cos.to_bits());
            prop_assert_eq!(back.sum_sin.to_bits(), sin.to_bits());
            prop_assert_eq!(back, p);
        }
    }

    #[test]
    fn garbage_and_non_finite_sums_are_refused() {
        assert!(matches!(decode(b"hello"), Err(WireError::Json(_))));
        let mut p = Partial::empty("a", 1, 1, 0);
        p.sum_cos = f64::NAN;
        assert!(matches!(decode(&encode(&p)), Err(WireError::NotFinite)));
    }
}
