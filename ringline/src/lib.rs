//! ringline facade (in progress).
