//! The local wall clock in unix milliseconds: for stamping proposals on the leader, progress
//! messages and CLI output. Never used inside apply, which takes time from the command.

/// Milliseconds since the unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since the unix epoch (0 if the clock is before it): for measuring when a change
/// arrived and took effect.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
