package worker

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// numbered returns n bytes of numbered lines, so a cut in the wrong place
// shows in a diff.
func numbered(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()[:n]
}

func cutLine(omitted, max int) string {
	return fmt.Sprintf("=== conveyor: log cut: %d bytes omitted (worker.log_max_bytes=%d) ===\n", omitted, max)
}

func TestCappedWriter(t *testing.T) {
	t.Parallel()
	far := numbered(10_000)
	tests := []struct {
		name   string
		max    int64
		in     string
		chunks int // write in pieces of this size; 0: one Write
		want   string
	}{
		{"nothing written", 100, "", 0, ""},
		{"under the cap", 100, numbered(60), 0, numbered(60)},
		{"exactly at the cap", 100, numbered(100), 0, numbered(100)},
		{"exactly at the cap, byte by byte", 100, numbered(100), 1, numbered(100)},
		{"one byte over", 100, numbered(101), 0, numbered(101)[:50] + "\n" + cutLine(1, 100) + numbered(101)[51:]},
		{"far over the cap", 100, far, 0, far[:50] + "\n" + cutLine(10_000-100, 100) + far[10_000-50:]},
		{"far over, many small writes", 100, far, 7, far[:50] + "\n" + cutLine(10_000-100, 100) + far[10_000-50:]},
		{"far over, writes larger than the tail", 100, far, 333, far[:50] + "\n" + cutLine(10_000-100, 100) + far[10_000-50:]},
		{"odd cap: the tail gets the extra byte", 101, far, 3, far[:50] + "\n" + cutLine(10_000-101, 101) + far[10_000-51:]},
		{"head cut mid-line: the cut line gets a line of its own", 8, "line 0\nXYZ123\n..4567", 0, "line\n" + cutLine(12, 8) + "4567"},
		{"head ends with a newline: no blank line", 14, "line 0\nXYZ123\n..4567", 0, "line 0\n" + cutLine(6, 14) + "\n..4567"},
		{"no cap", 0, far, 13, far},
		{"negative cap is no cap", -1, far, 0, far},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			c := newCappedWriter(&out, tt.max)
			for p := tt.in; len(p) > 0; {
				k := len(p)
				if tt.chunks > 0 {
					k = min(k, tt.chunks)
				}
				n, err := c.Write([]byte(p[:k]))
				if err != nil || n != k {
					t.Fatalf("Write = %d, %v; want %d, nil", n, err, k)
				}
				p = p[k:]
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("log mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCappedWriterClosed(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	c := newCappedWriter(&out, 10)
	c.Write([]byte("0123456789abcdef"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if err := c.Close(); err != nil || out.String() != got {
		t.Fatalf("second Close = %v and wrote %q", err, out.String()[len(got):])
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, errLogClosed) {
		t.Fatalf("Write after Close = %v, want errLogClosed", err)
	}
}

// TestCappedWriterConcurrent: writers on several goroutines lose no count:
// the omitted bytes plus the kept ones add up to all written.
func TestCappedWriterConcurrent(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	const max, writers, writes = 64, 8, 500
	c := newCappedWriter(&out, max)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range writes {
				c.Write([]byte("0123456789abcde\n")) // 16 bytes: the head ends a line
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := cutLine(writers*writes*16-max, max)
	if got := out.String(); len(got) != max+len(want) || !strings.Contains(got, want) {
		t.Fatalf("log of %d bytes, want %d with %q:\n%s", len(got), max+len(want), want, got)
	}
}
