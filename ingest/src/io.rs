//! Reading and writing whole frames on QUIC streams, shared by the server
//! and the client. A frame is applied only once all its bytes are in: a
//! stream that ends or is reset mid-frame leaves nothing half-read behind.

use quinn::RecvStream;

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
    /// The stream was reset (or the connection lost) at a frame boundary.
    Failed(String),
    /// ... in the middle of a frame: what was read of it is dropped.
    Cut(String),
}

/// How filling a buffer from a stream stopped short.
enum Short {
    /// The peer finished the stream after this many bytes.
    Finished(usize),
    /// The stream was reset or lost after this many bytes.
    Failed(usize, String),
}

/// Reads exactly `buf.len()` bytes, saying how many came if fewer did.
async fn fill(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), Short> {
    let mut got = 0;
    while got < buf.len() {
        match recv.read(&mut buf[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) => return Err(Short::Finished(got)),
            Err(e) => return Err(Short::Failed(got, e.to_string())),
        }
    }
    Ok(())
}

/// Reads one frame into `buf` (resized to the payload).
pub async fn read_frame(recv: &mut RecvStream, max: usize, buf: &mut Vec<u8>) -> ReadFrame {
    let mut head = [0u8; FRAME_HEADER_LEN];
    match fill(recv, &mut head).await {
        Ok(()) => {}
        Err(Short::Finished(0)) => return ReadFrame::End,
        Err(Short::Finished(_)) => return ReadFrame::Truncated,
        Err(Short::Failed(0, e)) => return ReadFrame::Failed(e),
        Err(Short::Failed(_, e)) => return ReadFrame::Cut(e),
    }
    let h = match FrameHeader::parse(&head, max) {
        Ok(h) => h,
        Err(e) => return ReadFrame::Bad(e),
    };
    buf.clear();
    buf.resize(h.len as usize, 0);
    match fill(recv, buf).await {
        Ok(()) => ReadFrame::Frame(h),
        Err(Short::Finished(_)) => ReadFrame::Truncated,
        Err(Short::Failed(_, e)) => ReadFrame::Cut(e),
    }
}
