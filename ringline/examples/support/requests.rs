//! The request/response loop shared by the protocol examples (`http_hello`, `resp_server`).

use ringline::{ConnCtx, ParseResult};

/// Serves one connection: `parse` sees every buffered byte, appends the replies of the complete
/// requests to `out`, sets `close` when the connection should end after them, and says how much
/// it consumed. Replies are sent (awaited, so nothing is lost) after each parse. Ends at end of
/// stream, on an error, or after a reply marked `close`; returning closes the connection once
/// the queued bytes are written.
pub(crate) async fn answer_requests(
    conn: ConnCtx,
    mut parse: impl FnMut(&[u8], &mut Vec<u8>, &mut bool) -> ParseResult,
) {
    let mut out = Vec::with_capacity(4096);
    let mut close = false;
    loop {
        match conn.with_data(|data| parse(data, &mut out, &mut close)).await {
            Ok(0) => break, // end of stream
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "read ended");
                break;
            }
        }
        if !out.is_empty() {
            if let Err(e) = conn.send(&out).await {
                tracing::debug!(error = %e, "send failed");
                break;
            }
            out.clear();
        }
        if close {
            break;
        }
    }
}
