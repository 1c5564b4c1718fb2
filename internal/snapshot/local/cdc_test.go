package local

import (
	"bytes"
	"io"
	"math/rand"
	"sync"
	"testing"

	fastcdc "github.com/jotfs/fastcdc-go"
)

// TestCDCMatchesFastCDC: the chunker cuts where fastcdc-go cuts, so
// repositories written before it deduplicate against what it writes,
// including when one chunker is reused for several inputs.
func TestCDCMatchesFastCDC(t *testing.T) {
	const min, avg, max = 64 << 10, 256 << 10, 1 << 20
	rng := rand.New(rand.NewSource(1))
	c := newCDC(min, avg, max, nil)
	for _, size := range []int{0, 1, min, min + 1, avg, max, max + 1, 2 * max, 7*max + 12345} {
		data := make([]byte, size)
		rng.Read(data)
		// Runs of zeros give maximum-size cuts too.
		if size > 3*max {
			clear(data[max : 3*max])
		}
		want := libChunks(t, data, min, avg, max)
		c.reset(io.LimitReader(bytes.NewReader(data), int64(size)))
		var got [][]byte
		for {
			b, err := c.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, append([]byte(nil), b...))
		}
		if len(got) != len(want) {
			t.Fatalf("size %d: %d chunks, fastcdc-go %d", size, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("size %d: chunk %d differs (%d bytes, fastcdc-go %d)", size, i, len(got[i]), len(want[i]))
			}
		}
	}
}

// libMu: fastcdc.NewChunker rewrites the library's global table (with
// the same values, as the seed is 0) that its Next reads.
var libMu sync.Mutex

// libChunks cuts data with fastcdc-go, the reference.
func libChunks(t *testing.T, data []byte, min, avg, max int) [][]byte {
	t.Helper()
	libMu.Lock()
	defer libMu.Unlock()
	ch, err := fastcdc.NewChunker(bytes.NewReader(data), fastcdc.Options{MinSize: min, AverageSize: avg, MaxSize: max})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		k, err := ch.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), k.Data...))
	}
}

// BenchmarkCDC cuts 64 MiB of random bytes with fastcdc-go's table and
// with a keyed one (version 4 repositories): the table is the only
// difference, so the two should run at the same speed.
func BenchmarkCDC(b *testing.B) {
	data := make([]byte, 64<<20)
	rand.New(rand.NewSource(1)).Read(data)
	for _, bc := range []struct {
		name  string
		table *[256]uint64
	}{{"fastcdc-go", nil}, {"keyed", keyedGear(make([]byte, 32))}} {
		b.Run(bc.name, func(b *testing.B) {
			c := newCDC(chunkMin, chunkAvg, chunkMax, bc.table)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				c.reset(bytes.NewReader(data))
				for {
					if _, err := c.next(); err == io.EOF {
						break
					}
				}
			}
		})
	}
}
