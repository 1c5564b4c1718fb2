package local

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

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
	b, err := json.Marshal(exactNames(t))
	if err != nil {
		return ID{}, err
	}
	id := c.r.sealer.blobID(b)
	if c.known(id) {
		return id, nil
	}
	stored, z := cd.storeTemp(id, b)
	return id, c.tpk.add(id, blobTree, stored, z, len(b))
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
