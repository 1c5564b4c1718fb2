package local

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// For tests: a snapshot's whole tree read into one list (as restore did
// before it streamed), to inspect what Create wrote.

func (r *Repo) loadTree(ctx context.Context, x *index, s snapshot.Snapshot) (*tree, error) {
	id, t, err := r.loadRoot(ctx, x, s)
	if err != nil {
		return nil, err
	}
	t.Subtrees = []ID{id}
	if t.Version >= 3 {
		if err := r.loadDirs(ctx, x, t); err != nil {
			return nil, fmt.Errorf("tree of snapshot %s: %w", s.ID, err)
		}
	}
	return t, nil
}

// loadDirs reads the directory blobs of a version 3 tree t (its root
// blob read) into t.Entries, with paths, in the order Create walked.
func (r *Repo) loadDirs(ctx context.Context, x *index, t *tree) error {
	if len(t.Entries) != 1 || t.Entries[0].Path != "." || t.Entries[0].Type != typeDir || t.Entries[0].Sub == nil {
		return fmt.Errorf("%w: a version 3 tree's root blob holds the source directory alone", errCorrupt)
	}
	root := t.Entries[0]
	// Every directory blob, a level at a time, read in parallel; shared
	// ones once.
	dirs := map[ID][]entry{}
	refs := map[ID]int{*root.Sub: 1} // how many directories use each blob
	scratch := sync.Pool{New: func() any { return new([]entry) }}
	level := []ID{*root.Sub}
	total := 1
	for len(level) > 0 {
		// Each blob is decoded as soon as it is read, so that a level's
		// plaintext is not held whole beside its entries.
		// Entries are decoded into a reused, zeroed slice and kept in one
		// of exactly their number: decoding straight into a new slice grew
		// it by doubling, about as much garbage again as the entries.
		var mu sync.Mutex
		err := r.loadBlobs(ctx, x, level, func(id ID, b []byte) error {
			sp := scratch.Get().(*[]entry)
			defer func() {
				s := (*sp)[:cap(*sp)]
				clear(s) // the next decode starts from zero values
				*sp = s[:0]
				scratch.Put(sp)
			}()
			d := tree{Entries: (*sp)[:0]}
			err := decodeTree(b, &d)
			*sp = d.Entries
			if err != nil {
				return fmt.Errorf("%w: tree blob %s: %v", errCorrupt, id, err)
			}
			if d.Version != 3 {
				return fmt.Errorf("%w: tree blob %s has version %d inside a version 3 tree", errCorrupt, id, d.Version)
			}
			ents := slices.Clone(d.Entries)
			mu.Lock()
			dirs[id] = ents
			mu.Unlock()
			return nil
		})
		if err != nil {
			return err
		}
		if total += countKids(level, dirs); total > maxTreeEntries {
			return fmt.Errorf("%w: the tree describes more than %d entries", errCorrupt, maxTreeEntries)
		}
		var next []ID
		for _, id := range level {
			t.Subtrees = append(t.Subtrees, id)
			for i := range dirs[id] {
				e := &dirs[id][i]
				if err := checkName(e.Path); err != nil {
					return fmt.Errorf("%w: tree blob %s: %v", errCorrupt, id, err)
				}
				if e.Type != typeDir {
					continue
				}
				if e.Sub == nil {
					return fmt.Errorf("%w: tree blob %s: directory %q names no subtree", errCorrupt, id, e.Path)
				}
				refs[*e.Sub]++
				if _, seen := dirs[*e.Sub]; !seen {
					dirs[*e.Sub] = nil // claimed for the next level
					next = append(next, *e.Sub)
				}
			}
		}
		level = next
	}
	// Depth first, as Create walked: each directory followed by its
	// descendants. A subtree used twice is listed twice (under each
	// name), bounded by maxTreeEntries.
	// A blob's entries are dropped once its last user is listed, so
	// the directories read and the list made are not both held whole.
	out := make([]entry, 0, total)
	out = append(out, root)
	var flat func(id ID, prefix string) error
	flat = func(id ID, prefix string) error {
		kids := dirs[id]
		if refs[id]--; refs[id] == 0 {
			delete(dirs, id)
		}
		for _, e := range kids {
			if len(out) >= maxTreeEntries {
				return fmt.Errorf("%w: the tree describes more than %d entries", errCorrupt, maxTreeEntries)
			}
			e.Path = prefix + e.Path
			out = append(out, e)
			if e.Type == typeDir {
				if err := flat(*e.Sub, e.Path+"/"); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := flat(*root.Sub, ""); err != nil {
		return err
	}
	t.Entries = out
	return nil
}

// loadBlobs reads several blobs, checks them and gives each to fn, with
// one ranged read for blobs that lie close together in a pack (the tree
// blobs a snapshot adds are written one after the other), not one
// request per blob. fn is called from several goroutines at once, and
// its plaintext is valid during the call only.
func (r *Repo) loadBlobs(ctx context.Context, x *index, ids []ID, fn func(ID, []byte) error) error {
	type blob struct {
		id  ID
		loc location
	}
	byPack := map[ID][]blob{}
	for _, id := range ids {
		loc, ok := x.lookup(id)
		if !ok {
			return fmt.Errorf("%w: blob %s is in no index", errCorrupt, id)
		}
		byPack[loc.Pack] = append(byPack[loc.Pack], blob{id, loc})
	}
	// A range: blobs of one pack with gaps of at most maxGap between them.
	const maxGap = 256 << 10
	type span struct {
		pack       ID
		start, end int64
		blobs      []blob
	}
	var spans []span
	for p, bs := range byPack {
		sort.Slice(bs, func(i, j int) bool { return bs[i].loc.Offset < bs[j].loc.Offset })
		for _, b := range bs {
			off, end := int64(b.loc.Offset), int64(b.loc.Offset)+int64(b.loc.Length)
			if n := len(spans); n > 0 && spans[n-1].pack == p && off-spans[n-1].end <= maxGap {
				spans[n-1].end = max(spans[n-1].end, end)
				spans[n-1].blobs = append(spans[n-1].blobs, b)
				continue
			}
			spans = append(spans, span{p, off, end, []blob{b}})
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads)
	for _, sp := range spans {
		g.Go(func() error {
			name := "packs/" + sp.pack.String()
			body, err := r.getRange(gctx, name, sp.start, sp.end-sp.start)
			if errors.Is(err, errNoKey) {
				return fmt.Errorf("%w: %s is missing (it holds blob %s)", errCorrupt, r.key(name), sp.blobs[0].id)
			}
			if err != nil {
				return err
			}
			cd := r.newCodec()
			for _, b := range sp.blobs {
				from, to := int64(b.loc.Offset)-sp.start, int64(b.loc.Offset)+int64(b.loc.Length)-sp.start
				if to > int64(len(body)) {
					return fmt.Errorf("%w: %s: blob %s is cut short", errCorrupt, r.key(name), b.id)
				}
				data, err := cd.openInto(blobEntry{ID: b.id, location: b.loc}, body[from:to])
				if err != nil {
					return fmt.Errorf("%w: %s: %v", errCorrupt, r.key(name), err)
				}
				if err := fn(b.id, data); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// countKids is how many entries the blobs of level hold (each once).
func countKids(level []ID, dirs map[ID][]entry) int {
	n := 0
	for _, id := range level {
		n += len(dirs[id])
	}
	return n
}
