//! Property tests of `ConnKey`'s 56-bit packing (`to_u64` / `from_u64`), the form backends carry
//! keys in (io_uring `user_data`, mio tokens).

use proptest::prelude::*;
use ringline_core::ConnKey;

/// Slot indices are below 2^24 (the packing keeps 24 bits of index).
const INDEX_LIMIT: u32 = 1 << 24;

fn key() -> impl Strategy<Value = ConnKey> {
    (0..INDEX_LIMIT, any::<u32>()).prop_map(|(index, generation)| ConnKey { index, generation })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn to_u64_round_trips_through_from_u64_and_fits_in_56_bits(k in key()) {
        let packed = k.to_u64();
        prop_assert!(packed < 1 << 56, "{k:?} packs to {packed:#x}, above 56 bits");
        prop_assert_eq!(ConnKey::from_u64(packed), k);
    }

    #[test]
    fn distinct_keys_pack_to_distinct_values(a in key(), b in key()) {
        prop_assert_eq!(a == b, a.to_u64() == b.to_u64());
    }

    #[test]
    fn keys_differing_in_one_field_pack_distinctly(k in key(), index in 0..INDEX_LIMIT, generation in any::<u32>()) {
        // Same slot, older or newer generation: a stale key must not alias the live one.
        if generation != k.generation {
            prop_assert_ne!(k.to_u64(), ConnKey { generation, ..k }.to_u64());
        }
        // Same generation, another slot.
        if index != k.index {
            prop_assert_ne!(k.to_u64(), ConnKey { index, ..k }.to_u64());
        }
    }

    #[test]
    fn from_u64_ignores_the_top_eight_bits(k in key(), top in any::<u8>()) {
        let tagged = k.to_u64() | (u64::from(top) << 56);
        prop_assert_eq!(ConnKey::from_u64(tagged), k);
    }
}
