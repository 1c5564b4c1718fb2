package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/zeebo/blake3"
)

type volStats struct {
	files int
	bytes int64
}

// shape is a kind of volume: how to generate it (seeded) and change it
// between snapshots: part is 1 for the change before the incremental
// snapshot, 1/4 for the smaller ones before prune.
type shape struct {
	generate func(root string, scale float64, seed int64) (volStats, error)
	change   func(root string, scale, part float64, seed int64) error
}

var shapes = map[string]shape{
	"mixed": {generate, func(root string, scale, part float64, seed int64) error { return change(root, scale*part, seed) }},
	"small": {generateSmall, func(root string, _, part float64, seed int64) error { return changeSmall(root, part, seed) }},
}

// smallFiles is the small shape's file count at scale 1.
const smallFiles = 1_000_000

// generateSmall writes a volume of many small files: 1,000,000 at scale
// 1, of 0-4 KiB each (uniformly; about 1 in 4,000 empty), in a tree like
// a job output volume: 16 top directories, 32 below each, and leaf
// directories of 1 to 200 files (about 10,000 leaves at scale 1). 7 in 10
// are log-like text, 2 in 10 random bytes, 1 in 10 a copy of an earlier
// file. Seeded.
func generateSmall(root string, scale float64, seed int64) (volStats, error) {
	var st volStats
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	n := max(1, int(smallFiles*scale))
	var kept [][]byte
	leaf, left := 0, 0
	var dir string
	for i := 0; i < n; i++ {
		if left == 0 {
			left = 1 + rng.IntN(200)
			dir = filepath.Join(root, fmt.Sprintf("t%02d/u%02d/v%05d", leaf%16, (leaf/16)%32, leaf))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return st, err
			}
			leaf++
		}
		left--
		var b []byte
		switch k := rng.IntN(10); {
		case k == 9 && len(kept) > 0:
			b = kept[rng.IntN(len(kept))]
		case k >= 7:
			b = randBytes(rng, rng.IntN(4097))
		default:
			b = logText(rng, rng.IntN(4097), i)
		}
		if len(kept) < 4096 {
			kept = append(kept, b)
		} else if rng.IntN(64) == 0 {
			kept[rng.IntN(len(kept))] = b
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%07d.dat", i)), b, 0o644); err != nil {
			return st, err
		}
		st.files++
		st.bytes += int64(len(b))
	}
	return st, nil
}

// changeSmall rewrites 2% of the small shape's files (every 50th in walk
// order, from a seeded offset) and adds 1% in new directories, times
// part (at most 1), whatever the volume's scale.
func changeSmall(root string, part float64, seed int64) error {
	rng := rand.New(rand.NewPCG(uint64(seed), 4))
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	step := max(1, int(50/min(1, part)))
	for i := rng.IntN(step); i < len(files); i += step {
		if err := os.WriteFile(files[i], logText(rng, rng.IntN(4097), i), 0o644); err != nil {
			return err
		}
	}
	added := int(float64(len(files)) / 100 * min(1, part))
	for i := 0; i < added; i++ {
		dir := filepath.Join(root, fmt.Sprintf("new-%d/w%03d", seed, i/200))
		if i%200 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("g%07d.dat", i)), logText(rng, rng.IntN(4097), i), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// generate writes the benchmark volume: log-like text (1 GB at scale 1),
// random binaries (500 MB, 5 of the 50 duplicated), 20,000 small files of
// 1-8 KB (every 10th a copy of another). Seeded: the same seed gives the
// same content.
func generate(root string, scale float64, seed int64) (volStats, error) {
	var st volStats
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	write := func(rel string, b []byte) error {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		st.files++
		st.bytes += int64(len(b))
		return os.WriteFile(p, b, 0o644)
	}
	logSize := int(125e6 * scale)
	for i := 0; i < 8; i++ {
		if err := write(fmt.Sprintf("logs/worker-%d.log", i), logText(rng, logSize, i*1000000)); err != nil {
			return st, err
		}
	}
	binSize := int(10e6 * scale)
	for i := 0; i < 45; i++ {
		b := randBytes(rng, binSize)
		if err := write(fmt.Sprintf("work/bin/blob-%02d.bin", i), b); err != nil {
			return st, err
		}
		if i%9 == 0 {
			if err := write(fmt.Sprintf("work/copies/blob-%02d.bin", i/9), b); err != nil {
				return st, err
			}
		}
	}
	nSmall := int(20000 * min(1, scale*2))
	var smalls [][]byte
	for i := 0; i < nSmall; i++ {
		var b []byte
		if i%10 == 9 {
			b = smalls[rng.IntN(len(smalls))]
		} else {
			b = logText(rng, 1024+rng.IntN(7*1024), i)
			smalls = append(smalls, b)
		}
		if err := write(fmt.Sprintf("work/jobs/%03d/out-%05d.txt", i%200, i), b); err != nil {
			return st, err
		}
	}
	runtime.GC()
	debug.FreeOSMemory()
	return st, nil
}

// change modifies about 5% of the volume (at scale 1): appends to every
// log, rewrites 3 binaries, rewrites 1,000 small files and adds 500.
func change(root string, scale float64, seed int64) error {
	rng := rand.New(rand.NewPCG(uint64(seed), 2))
	for i := 0; i < 8; i++ {
		f, err := os.OpenFile(filepath.Join(root, fmt.Sprintf("logs/worker-%d.log", i)), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(logText(rng, int(8e6*scale), int(seed)*1000+i))
		f.Close()
		if err != nil {
			return err
		}
	}
	for i := 0; i < 3; i++ {
		p := filepath.Join(root, fmt.Sprintf("work/bin/blob-%02d.bin", rng.IntN(45)))
		if err := os.WriteFile(p, randBytes(rng, int(10e6*scale)), 0o644); err != nil {
			return err
		}
	}
	n := int(1000 * min(1, scale*2))
	for i := 0; i < n; i++ {
		j := rng.IntN(int(20000 * min(1, scale*2)))
		p := filepath.Join(root, fmt.Sprintf("work/jobs/%03d/out-%05d.txt", j%200, j))
		if err := os.WriteFile(p, logText(rng, 1024+rng.IntN(7*1024), j), 0o644); err != nil {
			return err
		}
	}
	for i := 0; i < n/2; i++ {
		p := filepath.Join(root, fmt.Sprintf("work/new-%d/%03d/out-%05d.txt", seed, i%50, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, logText(rng, 1024+rng.IntN(7*1024), i), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var levels = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
var msgs = []string{"processed chunk", "uploaded part", "job started", "job finished", "retrying request", "cache miss", "opened input", "wrote output"}

// logText is log-like text: timestamps, levels, ids and numbers.
func logText(rng *rand.Rand, n, start int) []byte {
	b := make([]byte, 0, n+200)
	ts := int64(1_780_000_000_000 + start*1000)
	for len(b) < n {
		ts += int64(rng.IntN(50))
		b = strconv.AppendInt(b, ts, 10)
		b = append(b, ' ')
		b = append(b, levels[rng.IntN(len(levels))]...)
		b = append(b, " job="...)
		b = strconv.AppendUint(b, rng.Uint64()&0xffffffff, 16)
		b = append(b, " step="...)
		b = strconv.AppendInt(b, int64(rng.IntN(20)), 10)
		b = append(b, " bytes="...)
		b = strconv.AppendInt(b, int64(rng.IntN(1<<22)), 10)
		b = append(b, " msg=\""...)
		b = append(b, msgs[rng.IntN(len(msgs))]...)
		b = append(b, "\"\n"...)
	}
	return b[:n]
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		b[i], b[i+1], b[i+2], b[i+3], b[i+4], b[i+5], b[i+6], b[i+7] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
	return b[:n]
}

// compareTrees checks that every regular file of want is in got with the
// same content.
func compareTrees(want, got, who string) error {
	n := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil {
			return fmt.Errorf("%s restore: %w", who, err)
		}
		if len(a) != len(b) || blake3.Sum256(a) != blake3.Sum256(b) || !bytes.Equal(a[:min(64, len(a))], b[:min(64, len(b))]) {
			return fmt.Errorf("%s restore: %s differs", who, rel)
		}
		n++
		return nil
	})
	if err == nil {
		fmt.Printf("  %-8s restore checked: %d files identical\n", who, n)
	}
	return err
}
