package local

import (
	"context"
	"errors"
	"fmt"
	"sort"
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
}

// Verify reads back every pack that the snapshot id references (every
// snapshot when id is ""), checks every blob's hash and that every chunk of
// every file is indexed. The error wraps ErrCorrupt when a problem is
// found; the report lists them all.
func (r *Repo) Verify(ctx context.Context, id string, progress func(snapshot.Progress)) (VerifyReport, error) {
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
	// Which blobs of which packs to check.
	check := map[ID]map[ID]bool{}
	want := func(b ID, what string) {
		loc, ok := x.lookup(b)
		if !ok {
			problem("blob %s (%s) is in no index", b, what)
			return
		}
		if check[loc.Pack] == nil {
			check[loc.Pack] = map[ID]bool{}
		}
		check[loc.Pack][b] = true
	}
	for _, s := range list {
		rep.Snapshots++
		t, err := r.loadTree(ctx, x, s)
		if err != nil {
			problem("%v", err)
			continue
		}
		tid, _ := parseID(s.Tree)
		want(tid, "tree of snapshot "+s.ID)
		for _, e := range t.Entries {
			for _, c := range e.Chunks {
				want(c, e.Path+" in snapshot "+s.ID)
			}
		}
	}
	if id == "" {
		// Everything indexed, referenced or not: prune relies on it.
		for p, es := range x.packs {
			if check[p] == nil {
				check[p] = map[ID]bool{}
			}
			for _, e := range es {
				check[p][e.ID] = true
			}
		}
	}
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads)
	var codecs sync.Pool
	codecs.New = func() any { return newCodec() }
	for p, blobs := range check {
		g.Go(func() error {
			name := r.key("packs/" + p.String())
			body, err := r.get(gctx, "packs/"+p.String())
			if errors.Is(err, errNoKey) {
				problem("%s is missing (%d blob(s))", name, len(blobs))
				return nil
			}
			if err != nil {
				return err
			}
			done.Add(int64(len(body)))
			if progress != nil {
				progress(snapshot.Progress{Bytes: done.Load()})
			}
			if _, err := parsePack(p, body); err != nil {
				problem("%s: %v", name, err)
			}
			cd := codecs.Get().(*codec)
			defer codecs.Put(cd)
			n := 0
			for b := range blobs {
				loc, _ := x.lookup(b)
				if loc.Pack != p {
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
