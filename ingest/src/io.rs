//! Reading and writing whole frames on QUIC streams, shared by the server
//! and the client. A frame is applied only once all its bytes are in: a
//! stream that ends or is reset mid-frame leaves nothing half-read behind.

use quinn::{ReadExactError, RecvStream};

use crate::protocol::{DecodeError, FRAME_HEADER_LEN, FrameHeader};

/// What reading the next frame gave.
#[derive(Debug)]
pub enum ReadFrame {
    /// A whole frame; its payload is in the buffer.
    Frame(FrameHeader),
    /// The peer finished the stream at a frame boundary.
    End,
    /// The peer finished the stream in the middle of a frame.
    Truncated,
    /// The header is unacceptable (too large, reserved bits).
    Bad(DecodeError),
    /// The stream was reset or the connection lost.
    Failed(String),
}

/// Reads one frame into `buf` (resized to the payload).
pub async fn read_frame(recv: &mut RecvStream, max: usize, buf: &mut Vec<u8>) -> ReadFrame {
    let mut head = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return ReadFrame::End,
        Err(ReadExactError::FinishedEarly(_)) => return ReadFrame::Truncated,
        Err(ReadExactError::ReadError(e)) => return ReadFrame::Failed(e.to_string()),
    }
    let h = match FrameHeader::parse(&head, max) {
        Ok(h) => h,
        Err(e) => return ReadFrame::Bad(e),
    };
    buf.clear();
    buf.resize(h.len as usize, 0);
    match recv.read_exact(buf).await {
        Ok(()) => ReadFrame::Frame(h),
        Err(ReadExactError::FinishedEarly(_)) => ReadFrame::Truncated,
        Err(ReadExactError::ReadError(e)) => ReadFrame::Failed(e.to_string()),
    }
}
