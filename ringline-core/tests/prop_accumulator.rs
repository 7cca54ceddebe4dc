//! Property test of the receive accumulator through the public API, over the `MockDriver`: a
//! random byte stream, delivered in random chunk sizes, read by a random mix of `with_data`,
//! `with_data` + `NeedAtLeast`, `with_bytes` and `recv`, comes out whole, in order, exactly once;
//! and every `Bytes` handed to the handler keeps its contents while later bytes arrive into the
//! reused buffer.
#![cfg(feature = "testing")]

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Hooks, WAIT, cfg, start, wait_for, watchdog};
use proptest::prelude::*;
use ringline_core::ParseResult;

/// One read of the handler's script (cycled until end of stream).
#[derive(Clone, Debug)]
enum Read {
    /// `with_data`, consuming up to `n` bytes.
    Data(usize),
    /// `with_data` answering `NeedAtLeast(n)` until `n` bytes are buffered, then consuming `n`.
    Need(usize),
    /// `with_bytes`, keeping the `Bytes` it was shown and consuming up to `n`.
    Bytes(usize),
    /// `recv`, keeping what it returns.
    Recv,
}

fn read() -> impl Strategy<Value = Read> {
    prop_oneof![
        (1..40usize).prop_map(Read::Data),
        (1..80usize).prop_map(Read::Need),
        (1..40usize).prop_map(Read::Bytes),
        Just(Read::Recv),
    ]
}

/// What the handler saw: every consumed byte, and each kept `Bytes` with its stream offset.
#[derive(Default)]
struct Seen {
    consumed: Vec<u8>,
    kept: Vec<(usize, Bytes)>,
    done: bool,
}

/// Runs `script` against `stream` delivered in `chunk`-byte receives; returns what the handler saw.
fn run(stream: &[u8], chunk: usize, script: Vec<Read>) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let rt = start(cfg(), move || Hooks {
        accept: Box::new(move |conn| {
            let (out, script) = (out.clone(), script.clone());
            Box::pin(async move {
                let mut consumed = Vec::new();
                let mut kept = Vec::new();
                for step in script.iter().cycle() {
                    let offset = consumed.len();
                    let n = match *step {
                        Read::Data(n) => conn
                            .with_data(|d| {
                                let k = n.min(d.len());
                                consumed.extend_from_slice(&d[..k]);
                                ParseResult::Consumed(k)
                            })
                            .await
                            .unwrap(),
                        Read::Need(n) => conn
                            .with_data(|d| {
                                if d.len() < n {
                                    return ParseResult::NeedAtLeast(n);
                                }
                                consumed.extend_from_slice(&d[..n]);
                                ParseResult::Consumed(n)
                            })
                            .await
                            .unwrap(),
                        Read::Bytes(n) => conn
                            .with_bytes(|b| {
                                let k = n.min(b.len());
                                consumed.extend_from_slice(&b[..k]);
                                kept.push((offset, b));
                                ParseResult::Consumed(k)
                            })
                            .await
                            .unwrap(),
                        Read::Recv => {
                            let b = conn.recv().await.unwrap();
                            consumed.extend_from_slice(&b);
                            let n = b.len();
                            kept.push((offset, b));
                            n
                        }
                    };
                    if n == 0 {
                        break;
                    }
                }
                // End of stream; a `NeedAtLeast` read may have left a short tail buffered.
                loop {
                    let b = conn.recv().await.unwrap();
                    if b.is_empty() {
                        break;
                    }
                    consumed.extend_from_slice(&b);
                }
                *out.lock().unwrap() = Seen { consumed, kept, done: true };
            })
        }),
        ..Hooks::default()
    });
    rt.net.set_recv_chunk(chunk);
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    peer.send(stream).unwrap();
    peer.fin();
    assert!(wait_for(WAIT, || seen.lock().unwrap().done), "the handler reached end of stream");
    rt.stop();
    std::mem::take(&mut *seen.lock().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accumulator_delivers_the_stream_once_in_order_and_kept_bytes_stay_intact(
        stream in prop::collection::vec(any::<u8>(), 0..600),
        chunk in 1..7usize,
        script in prop::collection::vec(read(), 1..8),
    ) {
        let _w = watchdog("accumulator_delivers_the_stream_once_in_order_and_kept_bytes_stay_intact");
        let seen = run(&stream, chunk, script);
        prop_assert_eq!(&seen.consumed[..], &stream[..], "consumed bytes are the stream, in order, once");
        for (offset, b) in &seen.kept {
            prop_assert_eq!(&b[..], &stream[*offset..*offset + b.len()], "kept Bytes at offset {} changed", offset);
        }
    }
}
