package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Version 3 trees: a tree blob per directory.
//
// The snapshot's Tree is a blob holding one entry, "." (the source
// directory's own metadata), whose Sub names the blob of its entries. A
// directory's blob lists its entries by name, in lexical order, with the
// metadata and chunks of version 2; each subdirectory's entry names, in
// Sub, the blob of that subdirectory's entries. As blobs are addressed by
// the hash of their content, a directory whose entries (and, down the
// tree, theirs) are all unchanged has the same blob as in the parent
// snapshot: Create finds it stored and writes nothing for it, and a
// snapshot whose volume did not change adds no tree at all. No blob is
// bigger than one directory's listing, so a tree of millions of files is
// many small blobs rather than one that must be read whole.

// maxTreeEntries bounds what a version 3 tree may expand to: subtrees may
// be shared (every empty directory has the same blob), and a forged tree
// could share one so as to describe more entries than memory holds.
const maxTreeEntries = 1 << 27

// openParent opens the parent snapshot s for Create: how to read its
// directories, and the blob of the source directory's entries (a
// placeholder for a version 1 or 2 tree, whose directories are found by
// path).
func (r *Repo) openParent(ctx context.Context, x *index, s snapshot.Snapshot) (parentTree, *ID, error) {
	_, t, err := r.loadRoot(ctx, x, s)
	if err != nil {
		return nil, nil, err
	}
	if t.Version < 3 {
		return newLegacyTree(t), &ID{}, nil
	}
	return newTreeCache(r, x), t.Entries[0].Sub, nil
}

// sameEntry compares everything a directory's blob records of an entry
// but its name.
func sameEntry(a, b *entry) bool {
	if a.Type != b.Type || a.Mode != b.Mode || a.MTime != b.MTime || a.Size != b.Size || a.Inode != b.Inode ||
		a.Target != b.Target || a.UID != b.UID || a.GID != b.GID || a.Rdev != b.Rdev || a.Sparse != b.Sparse {
		return false
	}
	if (a.Sub == nil) != (b.Sub == nil) || (a.Sub != nil && *a.Sub != *b.Sub) {
		return false
	}
	if !slices.Equal(a.Chunks, b.Chunks) || len(a.Xattrs) != len(b.Xattrs) {
		return false
	}
	for k, v := range a.Xattrs {
		if w, ok := b.Xattrs[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// putTree stores a tree blob unless it is stored already.
func (c *creator) putTree(cd *codec, t tree) (ID, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return ID{}, err
	}
	id := c.r.sealer.blobID(b)
	if c.known(id) {
		return id, nil
	}
	stored, z := cd.storeTemp(b)
	return id, c.tpk.add(id, blobTree, stored, z, len(b))
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

// checkName refuses an entry name of a version 3 directory blob that is
// not one path component.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("entry name %q is not one path component", name)
	}
	return nil
}

// eachEntry visits every entry of snapshot s's tree, depth first, a
// directory at a time (version 3; a version 1 or 2 tree is one blob, read
// whole), with its path below the source; treeFn gets every tree blob the
// snapshot uses. With seen, a directory blob in it is not read (nor its
// descendants): what an earlier call visited is visited once, as prune
// and verify want; each blob read is added to it. Without, every path is
// visited, shared subtrees under each of their names, up to
// maxTreeEntries. What it holds is the directories of one path.
func (r *Repo) eachEntry(ctx context.Context, x *index, tc *treeCache, s snapshot.Snapshot, seen map[ID]bool, treeFn func(ID), fn func(path string, e *entry) error) error {
	id, t, err := r.loadRoot(ctx, x, s)
	if err != nil {
		return err
	}
	treeFn(id)
	if t.Version < 3 {
		for i := range t.Entries {
			if err := fn(t.Entries[i].Path, &t.Entries[i]); err != nil {
				return err
			}
		}
		return nil
	}
	root := t.Entries[0]
	if err := fn(".", &root); err != nil {
		return err
	}
	n := 1
	var visit func(id ID, prefix string) error
	visit = func(id ID, prefix string) error {
		if seen != nil {
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		treeFn(id)
		kids, err := tc.dir(ctx, prefix, &id)
		if err != nil {
			return fmt.Errorf("tree of snapshot %s: %w", s.ID, err)
		}
		if n += len(kids); n > maxTreeEntries {
			return fmt.Errorf("%w: the tree of snapshot %s describes more than %d entries", errCorrupt, s.ID, maxTreeEntries)
		}
		for i := range kids {
			e := &kids[i]
			p := prefix + e.Path
			if err := fn(p, e); err != nil {
				return err
			}
			if e.Type == typeDir {
				if e.Sub == nil {
					return fmt.Errorf("%w: tree blob %s: directory %q names no subtree", errCorrupt, id, e.Path)
				}
				if err := visit(*e.Sub, p+"/"); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return visit(*root.Sub, "")
}
