package local

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// VerifyReport is what Verify read and what it found wrong.
type VerifyReport struct {
	Snapshots int      `json:"snapshots"`
	Packs     int      `json:"packs"`
	Blobs     int      `json:"blobs"`
	Bytes     int64    `json:"bytes"`
	Problems  []string `json:"problems"` // each names the object
	// PacksNotRead: packs outside the subset read; only their presence
	// was checked.
	PacksNotRead int `json:"packs_not_read,omitempty"`
}

// VerifyOptions tune one Verify.
type VerifyOptions struct {
	Progress func(snapshot.Progress)
	// Subset, when set, reads only part of the packs, as restic's
	// --read-data-subset: "n/m" reads the n-th of m groups (a pack is in
	// group 1 + its hash's first byte mod m, so m runs read each pack
	// once), "x%" or a fraction "0.x" reads that share of them, chosen at
	// random. The index, every tree, and the presence of every pack are
	// checked whatever the subset.
	Subset string
}

// parseSubset returns whether a pack is in the subset s, for n packs.
func parseSubset(s string, n int) (func(ID) bool, error) {
	if a, b, ok := strings.Cut(s, "/"); ok {
		i, err1 := strconv.Atoi(a)
		m, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || m < 1 || m > 256 || i < 1 || i > m {
			return nil, fmt.Errorf("read-data-subset %q: n/m needs 1 <= n <= m <= 256", s)
		}
		return func(p ID) bool { return int(p[0])%m == i-1 }, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if strings.HasSuffix(s, "%") {
		f /= 100
	}
	if err != nil || f <= 0 || f > 1 {
		return nil, fmt.Errorf("read-data-subset %q: give n/m, a percentage (5%%) or a fraction (0.05) above 0 and at most 1", s)
	}
	k := int(math.Ceil(f * float64(n)))
	pick := map[int]bool{}
	for _, i := range rand.Perm(n)[:k] {
		pick[i] = true
	}
	// Packs are numbered in the order they are asked about.
	seen := map[ID]int{}
	return func(p ID) bool {
		i, ok := seen[p]
		if !ok {
			i = len(seen)
			seen[p] = i
		}
		return pick[i]
	}, nil
}

// Verify reads back every pack that the snapshot id references (every
// snapshot when id is ""), checks every blob's hash and that every chunk of
// every file is indexed. The error wraps ErrCorrupt when a problem is
// found; the report lists them all.
func (r *Repo) Verify(ctx context.Context, id string, progress func(snapshot.Progress)) (VerifyReport, error) {
	return r.VerifyWith(ctx, id, VerifyOptions{Progress: progress})
}

// VerifyWith is Verify with options: a subset of the packs to read.
func (r *Repo) VerifyWith(ctx context.Context, id string, opts VerifyOptions) (VerifyReport, error) {
	defer tightGC()()
	progress := opts.Progress
	var rep VerifyReport
	// A shared lock: a prune deleting meanwhile would read as damage.
	lk, err := r.lock(ctx, "verify", false)
	if err != nil {
		return rep, err
	}
	defer lk.release()
	ctx = lk.ctx
	x, err := r.loadIndex(ctx)
	if err != nil {
		return rep, err
	}
	list, err := r.List(ctx)
	if err != nil {
		return rep, err
	}
	if id != "" {
		s, err := find(list, id)
		if err != nil {
			return rep, err
		}
		list = []snapshot.Snapshot{s}
	}
	var mu sync.Mutex
	problem := func(format string, args ...any) {
		mu.Lock()
		rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// Which blobs to check (a bit each, over the index), and how many
	// of them each pack holds.
	wanted := x.newBlobSet()
	check := map[ID]int{}
	want := func(b ID, what string) {
		loc, ok := x.lookup(b)
		if !ok {
			problem("blob %s (%s) is in no index", b, what)
			return
		}
		if !wanted.has(b) {
			wanted.add(b)
			check[loc.Pack]++
		}
	}
	// A directory the snapshots share is read once.
	seen := map[ID]bool{}
	tc := newTreeCache(r, x)
	for _, s := range list {
		rep.Snapshots++
		err := r.eachEntry(ctx, x, tc, s, seen, func(id ID) { want(id, "tree of snapshot "+s.ID) }, func(p string, e *entry) error {
			for _, c := range e.Chunks {
				want(c, p+" in snapshot "+s.ID)
			}
			return nil
		})
		if err != nil {
			problem("%v", err)
		}
	}
	if id == "" {
		// Everything indexed, referenced or not: prune relies on it.
		for p, es := range x.packs {
			check[p] += 0 // read, even with nothing the index places in it
			for _, e := range es {
				want(e.ID, "")
			}
		}
	}
	if opts.Subset != "" {
		in, err := parseSubset(opts.Subset, len(check))
		if err != nil {
			return rep, err
		}
		stored, err := r.list(ctx, "packs/")
		if err != nil {
			return rep, err
		}
		present := map[string]bool{}
		for _, o := range stored {
			present[o.Name] = true
		}
		ids := make([]ID, 0, len(check))
		for p := range check {
			ids = append(ids, p)
		}
		sort.Slice(ids, func(i, j int) bool { return string(ids[i][:]) < string(ids[j][:]) })
		for _, p := range ids {
			if in(p) {
				continue
			}
			if !present["packs/"+p.String()] {
				problem("%s is missing (%d blob(s))", r.key("packs/"+p.String()), check[p])
			}
			delete(check, p)
			rep.PacksNotRead++
		}
	}
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads)
	var codecs sync.Pool
	codecs.New = func() any { return r.newCodec() }
	for p, blobs := range check {
		g.Go(func() error {
			// The pack's blobs wanted that the index places in it.
			name := r.key("packs/" + p.String())
			body, err := r.get(gctx, "packs/"+p.String())
			if errors.Is(err, errNoKey) {
				problem("%s is missing (%d blob(s))", name, blobs)
				return nil
			}
			if err != nil {
				return err
			}
			done.Add(int64(len(body)))
			if progress != nil {
				progress(snapshot.Progress{Bytes: done.Load()})
			}
			if _, err := parsePack(r.sealer, p, body); err != nil {
				problem("%s: %v", name, err)
			}
			cd := codecs.Get().(*codec)
			defer codecs.Put(cd)
			n := 0
			for _, e := range x.packs[p] {
				b := e.ID
				loc, _ := x.lookup(b)
				if loc.Pack != p || !wanted.has(b) {
					continue
				}
				n++
				end := int(loc.Offset) + int(loc.Length)
				if end > len(body) {
					problem("%s: blob %s is cut short", name, b)
					continue
				}
				if _, err := cd.open(blobEntry{ID: b, location: loc}, body[loc.Offset:end]); err != nil {
					problem("%s: %v", name, err)
				}
			}
			mu.Lock()
			rep.Packs++
			rep.Blobs += n
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}
	rep.Bytes = done.Load()
	sort.Strings(rep.Problems)
	if len(rep.Problems) > 0 {
		return rep, fmt.Errorf("%w: %d problem(s):\n  %s", snapshot.ErrCorrupt, len(rep.Problems), strings.Join(rep.Problems, "\n  "))
	}
	return rep, nil
}
