package local

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
)

// blobOwners says which packs' copies of the used blobs prune keeps.
type blobOwners struct {
	used *blobSet
	dups map[ID]bool // blobs in two packs or more
	one  map[ID]ID   // of those used: the one pack whose copy is kept
	all  map[ID]bool // of those used: the ones every copy of which is kept
}

// keeps reports whether prune keeps pack p's copy of blob id: the only
// copy of a used blob, or the copy chosen.
func (o blobOwners) keeps(p, id ID) bool {
	if !o.used.has(id) {
		return false
	}
	return !o.dups[id] || o.all[id] || o.one[id] == p
}

// ownUsedBlobs picks, for each used blob, the pack whose copy of it prune
// keeps. A blob can be in two packs: a prune killed after writing its new
// index, before removing the old one, leaves both the packs it rewrote
// and their copies indexed, and counting both as used would keep the two
// copies for good. So one copy is kept: in a pack that is stored (size
// lists them), the most used counting every copy (a rewritten pack: all
// of it), and only once that copy is read back sound; the other packs are
// deleted or rewritten as if the blob were unused there. A blob with no
// sound copy found that way keeps every copy, as before: what prune
// cannot check, it does not delete.
//
// Only the blobs the index found in more than one pack have a choice (a
// few, if any): the others are not counted or held.
func (r *Repo) ownUsedBlobs(ctx context.Context, x *index, used *blobSet, size map[ID]int64) (blobOwners, error) {
	type share struct {
		id         ID
		stored     bool
		used, size int64
	}
	order := make([]share, 0, len(x.packs))
	copies := map[ID]int{}
	for p, es := range x.packs {
		_, stored := size[p]
		s := share{id: p, stored: stored}
		for _, e := range es {
			s.size += int64(e.Length)
			if used.has(e.ID) {
				s.used += int64(e.Length)
				if x.dups[e.ID] {
					copies[e.ID]++
				}
			}
		}
		order = append(order, s)
	}
	// Stored first, then used/size descending (compared as cross
	// products), then by ID.
	slices.SortFunc(order, func(a, b share) int {
		if a.stored != b.stored {
			if a.stored {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.used*a.size, a.used*b.size); c != 0 {
			return c
		}
		return bytes.Compare(a.id[:], b.id[:])
	})
	o := blobOwners{used: used, dups: x.dups, one: map[ID]ID{}, all: map[ID]bool{}}
	check := map[ID][]blobEntry{} // owner pack -> its copies of duplicated blobs
	for _, s := range order {
		for _, e := range x.packs[s.id] {
			if _, taken := o.one[e.ID]; !x.dups[e.ID] || !used.has(e.ID) || taken {
				continue
			}
			o.one[e.ID] = s.id
			if copies[e.ID] > 1 {
				check[s.id] = append(check[s.id], e)
			}
		}
	}
	cd := r.newCodec()
	for p, es := range check {
		body, err := r.get(ctx, "packs/"+p.String())
		if err != nil && !errors.Is(err, errNoKey) {
			return o, fmt.Errorf("prune stops, nothing deleted: %w", err)
		}
		for _, e := range es {
			end := int(e.Offset) + int(e.Length)
			if err != nil || end > len(body) {
				o.all[e.ID] = true
				continue
			}
			if _, err := cd.open(e, body[e.Offset:end]); err != nil {
				r.cfg.Logf("snapshot: prune: %s's copy of blob %s is damaged (%v): every copy of it is kept; 'conveyor snapshot repair' replaces the damaged pack", r.key("packs/"+p.String()), e.ID, err)
				o.all[e.ID] = true
			}
		}
	}
	return o, nil
}
