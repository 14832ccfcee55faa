//! Line framing of the `json` serialization mode: every message is one JSON text plus `\n`.
//!
//! Reads arrive in arbitrary chunks (a line may span many reads, a read may hold many lines), so
//! bytes accumulate here and complete lines are handed out in order. A line longer than
//! `max_line` is reported once and then skipped up to its `\n` without being buffered: a child
//! that writes a huge (or endless) line must not make the master grow, and the lines after it
//! still arrive.

#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong {
    pub limit: usize,
}

pub struct LineBuffer {
    buf: Vec<u8>,
    /// Offset of the first byte not yet handed out.
    start: usize,
    /// Offset up to which `buf[start..]` is known to hold no `\n`, so a long line is scanned once.
    scanned: usize,
    max_line: usize,
    /// Inside an over-long line: drop bytes until its `\n`.
    discarding: bool,
}

impl LineBuffer {
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
            discarding: false,
        }
    }

    pub fn extend(&mut self, data: &[u8]) {
        // Compact lazily: only when the consumed prefix dominates, so small lines stay O(1).
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line without its `\n`, `None` when no full line is buffered. Borrowed:
    /// nothing is copied per line (the consumed prefix is dropped by a later `extend`).
    pub fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        if self.discarding {
            match memchr::memchr(b'\n', &self.buf[self.start..]) {
                Some(i) => {
                    self.start += i + 1;
                    self.scanned = self.start;
                    self.discarding = false;
                }
                None => {
                    self.clear();
                    return None;
                }
            }
        }
        let from = self.scanned.max(self.start);
        match memchr::memchr(b'\n', &self.buf[from..]) {
            Some(i) => {
                let end = from + i;
                let begin = self.start;
                self.start = end + 1;
                self.scanned = self.start;
                if end - begin > self.max_line {
                    return Some(Err(LineTooLong {
                        limit: self.max_line,
                    }));
                }
                Some(Ok(&self.buf[begin..end]))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.max_line {
                    self.clear();
                    self.discarding = true;
                    return Some(Err(LineTooLong {
                        limit: self.max_line,
                    }));
                }
                None
            }
        }
    }

    /// Bytes of an unterminated line still buffered (dropped on EOF, as Node does).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut LineBuffer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(l) = b.next_line() {
            out.push(l.unwrap().to_vec());
        }
        out
    }

    #[test]
    fn splits_many_lines_in_one_read() {
        let mut b = LineBuffer::new(1024);
        b.extend(b"{\"a\":1}\n{\"b\":2}\n{\"c\"");
        assert_eq!(
            drain(&mut b),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(b.pending(), 4);
        b.extend(b":3}\n");
        assert_eq!(drain(&mut b), vec![b"{\"c\":3}".to_vec()]);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn one_line_over_many_single_byte_reads() {
        let mut b = LineBuffer::new(1024);
        let msg = "{\"x\":\"héllo\"}\n".as_bytes();
        for byte in msg {
            b.extend(std::slice::from_ref(byte));
        }
        assert_eq!(drain(&mut b), vec![msg[..msg.len() - 1].to_vec()]);
    }

    #[test]
    fn empty_lines_are_returned_for_the_caller_to_reject() {
        let mut b = LineBuffer::new(16);
        b.extend(b"\n\n");
        assert_eq!(drain(&mut b), vec![Vec::<u8>::new(), Vec::new()]);
    }

    #[test]
    fn unterminated_long_line_is_reported_once_skipped_and_not_buffered() {
        let mut b = LineBuffer::new(8);
        b.extend(b"0123456789");
        assert_eq!(b.next_line(), Some(Err(LineTooLong { limit: 8 })));
        assert_eq!(b.pending(), 0);
        for _ in 0..100 {
            b.extend(b"more bytes of the same line");
            assert_eq!(b.next_line(), None);
            assert_eq!(b.pending(), 0);
        }
        b.extend(b"tail\n{\"ok\":1}\n");
        assert_eq!(b.next_line(), Some(Ok(&b"{\"ok\":1}"[..])));
        assert_eq!(b.next_line(), None);
    }

    #[test]
    fn terminated_long_line_is_an_error() {
        let mut b = LineBuffer::new(4);
        b.extend(b"0123456789\nok\n");
        assert_eq!(b.next_line(), Some(Err(LineTooLong { limit: 4 })));
        assert_eq!(b.next_line(), Some(Ok(&b"ok"[..])));
    }
}
