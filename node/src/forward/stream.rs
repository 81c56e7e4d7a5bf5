//! Bodies on a forward stream, both directions: an HTTP body written as data frames, and data
//! frames read into a bounded channel that an HTTP body drains.

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;

use crate::peer::frame;
use crate::proxy::body::BoxError;

/// Frames buffered between the stream and the HTTP side: flat memory per request.
const CHANNEL_FRAMES: usize = 8;

/// Write `body` as data frames and finish the stream. If the body fails, the stream is reset
/// with `on_error`, so the other side sees a failure rather than a short body taken for whole.
pub async fn send_body<B>(send: &mut SendStream, body: B, on_error: VarInt)
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if !data.is_empty() && frame::write_frame(send, &data).await.is_err() {
                        return;
                    }
                }
            }
            Err(_) => {
                let _ = send.reset(on_error);
                return;
            }
        }
    }
    let _ = send.finish();
}

/// Read data frames until the stream ends, into a channel an HTTP body drains; a failed stream
/// ends the channel with an error. Runs in its own task.
pub fn receive_body(mut recv: RecvStream, max_frame: usize) -> mpsc::Receiver<Result<Bytes, BoxError>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(CHANNEL_FRAMES);
    tokio::spawn(async move {
        loop {
            match frame::read_frame(&mut recv, max_frame).await {
                Ok(Some(data)) => {
                    if tx.send(Ok(Bytes::from(data))).await.is_err() {
                        // Nobody reads any more (the client went away).
                        let _ = recv.stop(frame::code::NO_REPLY);
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            }
        }
    });
    rx
}
