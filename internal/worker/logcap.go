package worker

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// errLogClosed is returned by a cappedWriter's Write after Close.
var errLogClosed = errors.New("job log writer is closed")

// cappedWriter bounds what one attempt appends to the job log, so a
// processor that prints without end cannot fill the volume: the first head
// bytes pass through at once, the last tail bytes are kept in a ring
// buffer, and Close writes a line saying how much was cut, then the tail.
// Nothing is cut from an output of up to head+tail bytes.
//
// The processor's stdout and stderr share one pipe, so there is one writer;
// Write and Close are safe for concurrent use anyway.
type cappedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	max    int64  // head+tail; 0 means no cap
	head   int64  // bytes that still pass through
	tail   []byte // ring of the newest bytes past the head, made on first need
	tsize  int    // the ring's size
	pos    int    // where the next byte goes in tail
	past   int64  // bytes written past the head, kept or not
	nl     bool   // the last byte passed through was a newline (or none was)
	closed bool
}

// newCappedWriter returns a writer that appends at most about max bytes of
// what it is given to w (half from the start, half from the end) plus one
// line naming what was cut. max <= 0 means no cap. Close flushes the tail;
// it does not close w.
func newCappedWriter(w io.Writer, max int64) *cappedWriter {
	c := &cappedWriter{w: w, nl: true}
	if max > 0 {
		c.max = max
		c.head = max / 2
		// The ring is allocated only once output passes the head: most
		// attempts never need it, and it is megabytes.
		c.tsize = int(max - max/2)
	}
	return c
}

// Write passes p through while the head lasts and keeps the rest in the
// tail. It reports all of p written unless w failed.
func (c *cappedWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errLogClosed
	}
	if c.max == 0 {
		return c.w.Write(p)
	}
	n := 0
	if c.head > 0 {
		k := min(int64(len(p)), c.head)
		m, err := c.w.Write(p[:k])
		if m > 0 {
			c.nl = p[m-1] == '\n'
		}
		c.head -= int64(m)
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	c.past += int64(len(p))
	if c.tail == nil {
		c.tail = make([]byte, c.tsize)
	}
	if len(p) >= len(c.tail) {
		copy(c.tail, p[len(p)-len(c.tail):])
		c.pos = 0
	} else {
		k := copy(c.tail[c.pos:], p)
		copy(c.tail, p[k:])
		c.pos = (c.pos + len(p)) % len(c.tail)
	}
	return n + len(p), nil
}

// Close writes what was kept of the end: after a line naming how many
// bytes were left out, if any were. Further Writes fail; Close again does
// nothing.
func (c *cappedWriter) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.past == 0 {
		return nil
	}
	if c.past <= int64(c.tsize) {
		_, err := c.w.Write(c.tail[:c.past])
		return err
	}
	sep := ""
	if !c.nl {
		sep = "\n"
	}
	if _, err := fmt.Fprintf(c.w, "%s=== conveyor: log cut: %d bytes omitted (worker.log_max_bytes=%d) ===\n",
		sep, c.past-int64(c.tsize), c.max); err != nil {
		return err
	}
	if _, err := c.w.Write(c.tail[c.pos:]); err != nil {
		return err
	}
	_, err := c.w.Write(c.tail[:c.pos])
	return err
}
