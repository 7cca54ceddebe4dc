//! `user_data` encoding: the operation kind in the top 8 bits, [`ConnKey::to_u64`] in the low 56.
//!
//! Every SQE the driver submits carries such a tag, so a completion names both what it completes
//! and which connection (slot and generation) it belongs to. A completion whose generation no
//! longer matches is stale and is never delivered (PITFALLS P3).

use ringline_core::driver::ConnKey;

/// What a submission queue entry does; stored in the top 8 bits of its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Multishot receive of a connection.
    Recv = 1,
    /// Send or sendmsg of a connection.
    Send = 2,
    /// Outbound connect.
    Connect = 3,
    /// An `AsyncCancel`; its result is ignored.
    Cancel = 4,
    /// The read of the unpark eventfd.
    Wake = 5,
    /// Multishot `RecvMsg` of a UDP socket (key: the `UdpKey`).
    UdpRecv = 6,
    /// `SendMsg` of a UDP datagram (key: the send's slab index and generation).
    UdpSend = 7,
    /// A file operation (key: the core's `DiskKey`).
    File = 8,
    /// The `PollAdd` watching the NVMe ring's fd.
    NvmeRing = 9,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Recv,
            2 => Kind::Send,
            3 => Kind::Connect,
            4 => Kind::Cancel,
            5 => Kind::Wake,
            6 => Kind::UdpRecv,
            7 => Kind::UdpSend,
            8 => Kind::File,
            9 => Kind::NvmeRing,
            _ => return None,
        })
    }
}

const KEY_MASK: u64 = (1 << 56) - 1;

/// Packs `kind` and `key` into a `user_data` value.
pub(crate) fn encode(kind: Kind, key: ConnKey) -> u64 {
    (u64::from(kind as u8) << 56) | (key.to_u64() & KEY_MASK)
}

/// Splits a `user_data` value into its kind (`None` if unknown) and connection key.
pub(crate) fn decode(user_data: u64) -> (Option<Kind>, ConnKey) {
    (Kind::from_u8((user_data >> 56) as u8), ConnKey::from_u64(user_data & KEY_MASK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let kinds = [
            Kind::Recv,
            Kind::Send,
            Kind::Connect,
            Kind::Cancel,
            Kind::Wake,
            Kind::UdpRecv,
            Kind::UdpSend,
            Kind::File,
            Kind::NvmeRing,
        ];
        for kind in kinds {
            for (index, generation) in [(0, 0), (1, 7), (0xFF_FFFF, u32::MAX)] {
                let key = ConnKey { index, generation };
                assert_eq!(decode(encode(kind, key)), (Some(kind), key));
            }
        }
    }

    #[test]
    fn unknown_kind_decodes_to_none() {
        assert_eq!(decode(0).0, None);
        assert_eq!(decode(0xFF << 56).0, None);
    }
}

/// Property tests: the encoding is a bijection between (known kind, 56-bit key) and `user_data`.
#[cfg(test)]
mod prop {
    use proptest::prelude::*;

    use super::*;

    /// Every kind `from_u8` knows, found by trying all tags, so a new kind is covered unnamed.
    fn kind() -> impl Strategy<Value = Kind> {
        let known: Vec<Kind> = (0..=u8::MAX).filter_map(Kind::from_u8).collect();
        proptest::sample::select(known)
    }

    fn key() -> impl Strategy<Value = ConnKey> {
        (0u32..1 << 24, any::<u32>()).prop_map(|(index, generation)| ConnKey { index, generation })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(k in kind(), key in key()) {
            prop_assert_eq!(decode(encode(k, key)), (Some(k), key));
        }

        #[test]
        fn distinct_pairs_never_share_a_tag(a in (kind(), key()), b in (kind(), key())) {
            prop_assume!(a != b);
            prop_assert_ne!(encode(a.0, a.1), encode(b.0, b.1));
        }

        #[test]
        fn any_tag_with_a_known_kind_re_encodes_to_itself(k in kind(), low in any::<u64>()) {
            let raw = (u64::from(k as u8) << 56) | (low & KEY_MASK);
            let (decoded, key) = decode(raw);
            prop_assert_eq!(decoded, Some(k));
            prop_assert_eq!(encode(k, key), raw);
        }
    }
}
