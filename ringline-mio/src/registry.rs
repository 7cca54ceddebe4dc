//! The connection table: maps mio tokens to [`ConnKey`]s and keys to live [`Conn`]s.
//!
//! A connection's token is `ConnKey::to_u64()`, which fits in 56 bits, so [`WAKER_TOKEN`]
//! (`usize::MAX`) can never collide with one. Lookups compare the generation, so an event or an
//! operation for a previous occupant of a slot never reaches the current one.

use mio::Token;
use ringline_core::driver::ConnKey;

use crate::conn::Conn;

/// The token of the driver's [`mio::Waker`]; above every connection token.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// The mio token of a connection.
pub(crate) fn token_of(key: ConnKey) -> Token {
    // Lossless: the key packs into 56 bits and usize is 64 bits (checked in lib.rs).
    Token(key.to_u64() as usize)
}

/// The connection key a (non-waker) token stands for.
pub(crate) fn key_of(token: Token) -> ConnKey {
    ConnKey::from_u64(token.0 as u64)
}

/// Live connections indexed by slot; each entry remembers its full key.
#[derive(Default)]
pub(crate) struct ConnTable {
    slots: Vec<Option<Conn>>,
    live: usize,
}

impl ConnTable {
    /// An empty table.
    pub(crate) fn new() -> Self {
        ConnTable::default()
    }

    /// The connection for `key`, if that exact generation is live.
    pub(crate) fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        match self.slots.get_mut(key.index as usize) {
            Some(Some(c)) if c.key == key => Some(c),
            _ => None,
        }
    }

    /// Stores `conn` in its slot and returns whatever occupied the slot before (a core bug).
    pub(crate) fn insert(&mut self, conn: Conn) -> Option<Conn> {
        let i = conn.key.index as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let old = self.slots[i].replace(conn);
        if old.is_none() {
            self.live += 1;
        }
        old
    }

    /// Removes and returns the connection for `key`, if that exact generation is live.
    pub(crate) fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.as_ref().is_some_and(|c| c.key == key) {
            self.live -= 1;
            slot.take()
        } else {
            None
        }
    }

    /// Removes every connection.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Conn> + '_ {
        self.live = 0;
        self.slots.drain(..).flatten()
    }

    /// Number of live connections.
    pub(crate) fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_hit_the_waker() {
        let k = ConnKey { index: 0xFF_FFFF, generation: u32::MAX };
        assert_eq!(key_of(token_of(k)), k);
        assert_ne!(token_of(k), WAKER_TOKEN);
    }

    #[test]
    fn lookups_check_the_generation() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let old = ConnKey { index: 5, generation: 1 };
        let new = ConnKey { index: 5, generation: 2 };
        let mut t = ConnTable::new();
        assert!(t.insert(Conn::new(old, mio::net::TcpStream::from_std(s), false)).is_none());
        assert!(t.get_mut(new).is_none());
        assert!(t.remove(new).is_none());
        assert_eq!(t.len(), 1);
        assert!(t.get_mut(old).is_some());
        assert!(t.remove(old).is_some());
        assert_eq!(t.len(), 0);
        assert!(t.get_mut(old).is_none());
    }
}
