package local

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// PruneReport says what Prune removed.
type PruneReport struct {
	Kept            []snapshot.Snapshot `json:"kept"`
	Removed         []snapshot.Snapshot `json:"removed"`
	Reasons         map[string][]string `json:"reasons"`
	PacksDeleted    int                 `json:"packs_deleted"`
	PacksRepacked   int                 `json:"packs_repacked"`
	BytesFreed      int64               `json:"bytes_freed"`
	RepositoryBytes int64               `json:"repository_bytes"`
	DryRun          bool                `json:"dry_run,omitempty"` // nothing was deleted: what would go
}

// repackBelow: a pack whose referenced bytes fall under this fraction of
// its size is rewritten with only those.
const repackBelow = 0.75

// Prune applies the policy (the empty policy removes no snapshot), then
// deletes the packs no remaining snapshot references, rewriting those that
// are mostly unreferenced. It holds the repository's exclusive lock, so no
// snapshot is being taken meanwhile, and works under the lock's context:
// a lost lock stops it before its next write. Packs that no index names
// are deleted only once older than PruneMargin by the store's clock (a
// snapshot whose lock was wrongly taken as stale may still be writing
// them). The order keeps every step safe to interrupt: snapshot objects,
// new packs, the new index, old index objects, old packs. A blob that an
// interrupted prune left in two packs is kept once, in the copy read back
// sound (ownUsedBlobs).
func (r *Repo) Prune(ctx context.Context, policy snapshot.Policy) (PruneReport, error) {
	return r.PruneWith(ctx, policy, PruneOptions{})
}

// PruneOptions tune one prune.
type PruneOptions struct {
	// DryRun plans and reports what would go, and writes nothing; it
	// takes a shared lock only.
	DryRun bool
}

// PruneWith is Prune with options.
func (r *Repo) PruneWith(ctx context.Context, policy snapshot.Policy, opts PruneOptions) (PruneReport, error) {
	defer tightGC()()
	var rep PruneReport
	lk, err := r.lock(ctx, "prune", !opts.DryRun)
	if err != nil {
		return rep, err
	}
	defer lk.release()
	ctx = lk.ctx
	list, err := r.List(ctx)
	if err != nil {
		return rep, err
	}
	rep.Kept, rep.Removed, rep.Reasons = snapshot.Apply(list, policy)
	x, err := r.loadIndex(ctx)
	if err != nil {
		return rep, fmt.Errorf("prune stops, nothing deleted: %w; run 'conveyor snapshot repair' to rebuild the index from the packs", err)
	}
	// What the kept snapshots reference; read before deleting anything.
	// A blob they use that no index names would be taken for garbage
	// (its pack unindexed): prune refuses, and repair rebuilds the index.
	// A directory the snapshots share is read once.
	used := x.newBlobSet()
	var unindexed []string
	seen := map[ID]bool{}
	tc := newTreeCache(r, x)
	for _, s := range rep.Kept {
		err := r.eachEntry(ctx, x, tc, s, seen, used.add, func(p string, e *entry) error {
			for _, c := range e.Chunks {
				used.add(c)
				if _, ok := x.lookup(c); !ok && len(unindexed) < 5 {
					unindexed = append(unindexed, fmt.Sprintf("%s of %s in snapshot %s", c, p, s.ID))
				}
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("prune stops, nothing deleted: %w; run 'conveyor snapshot repair' (it rebuilds the index and names what is lost), or 'conveyor snapshot delete %s'", err, s.ID)
		}
	}
	if len(unindexed) > 0 {
		return rep, fmt.Errorf("%w: prune stops, nothing deleted: blobs that kept snapshots use are in no index (%s); run 'conveyor snapshot repair' to rebuild the index from the packs, then prune again",
			errCorrupt, strings.Join(unindexed, "; "))
	}
	stored, err := r.list(ctx, "packs/")
	if err != nil {
		return rep, err
	}
	size := map[ID]int64{}
	var del []ID
	for _, o := range stored {
		id, err := parseID(strings.TrimPrefix(o.Name, "packs/"))
		if err != nil {
			continue
		}
		size[id] = o.Size
		if _, ok := x.packs[id]; !ok && lk.now.Sub(o.Modified) > r.cfg.PruneMargin {
			del = append(del, id) // left by an interrupted run
		}
	}
	owner, err := r.ownUsedBlobs(ctx, x, used, size)
	if err != nil {
		return rep, err
	}
	var keep []sealedPack
	var repack []sealedPack
	for p, es := range x.packs {
		var usedBytes, all int64
		for _, e := range es {
			all += int64(e.Length)
			if owner.keeps(p, e.ID) {
				usedBytes += int64(e.Length)
			}
		}
		switch {
		case usedBytes == 0:
			del = append(del, p)
		case float64(usedBytes) < repackBelow*float64(all):
			repack = append(repack, sealedPack{ID: p, Entries: es})
		default:
			keep = append(keep, sealedPack{ID: p, Entries: es})
		}
	}
	if r.onPrunePlanned != nil {
		r.onPrunePlanned()
	}
	if opts.DryRun {
		// What would go: whole packs, and the unused part of those
		// that would be rewritten.
		rep.PacksDeleted, rep.PacksRepacked = len(del), len(repack)
		for _, p := range del {
			rep.BytesFreed += size[p]
		}
		for _, sp := range repack {
			for _, e := range sp.Entries {
				if owner.keeps(sp.ID, e.ID) {
					rep.RepositoryBytes += int64(e.Length)
				} else {
					rep.BytesFreed += int64(e.Length)
				}
			}
		}
		for _, sp := range keep {
			rep.RepositoryBytes += size[sp.ID]
		}
		rep.DryRun = true
		return rep, nil
	}
	for _, s := range rep.Removed {
		if err := lk.check(); err != nil {
			return rep, err
		}
		err := r.del(ctx, "snapshots/"+s.ID)
		crashPruneSnapshotDel.hit()
		if err != nil {
			return rep, err
		}
	}
	// Repack: copy the referenced blobs into new packs.
	pk := newPacker(ctx, r)
	pk.crash = crashPrunePack
	cd := r.newCodec()
	copied := map[ID]bool{}
	// One pack's body and one blob's copy (checked in place) are reused
	// from one to the next: the packer copies what it is given.
	var body, scratch []byte
	for _, sp := range repack {
		var err error
		body, err = r.getInto(ctx, "packs/"+sp.ID.String(), body)
		if err != nil {
			pk.finish()
			return rep, fmt.Errorf("prune stops before deleting anything: %w", err)
		}
		for _, e := range sp.Entries {
			if !owner.keeps(sp.ID, e.ID) || copied[e.ID] {
				continue
			}
			end := int(e.Offset) + int(e.Length)
			if end > len(body) {
				pk.finish()
				return rep, fmt.Errorf("%w: %s: blob %s is cut short; prune stops before deleting anything", errCorrupt, r.key("packs/"+sp.ID.String()), e.ID)
			}
			stored := body[e.Offset:end]
			scratch = append(scratch[:0], stored...)
			if _, err := cd.openInto(e, scratch); err != nil {
				pk.finish()
				return rep, fmt.Errorf("%w: %s: %v; prune stops before deleting anything", errCorrupt, r.key("packs/"+sp.ID.String()), err)
			}
			copied[e.ID] = true
			if err := pk.add(e.ID, e.Type, stored, e.Compressed, int(e.Raw)); err != nil {
				pk.finish()
				return rep, err
			}
		}
		del = append(del, sp.ID)
	}
	newPacks, err := pk.finish()
	if err != nil {
		return rep, err
	}
	rep.PacksRepacked = len(repack)
	// Only rewrite the index when something changes.
	if len(del) > 0 || len(newPacks) > 0 {
		if err := lk.check(); err != nil {
			return rep, err
		}
		name, err := r.writeIndex(ctx, append(keep, newPacks...))
		crashPruneIndex.hit()
		if err != nil {
			return rep, err
		}
		if err := lk.check(); err != nil {
			return rep, err
		}
		for _, f := range x.files {
			if f != name {
				err := r.del(ctx, f)
				crashPruneIndexDeleted.hit()
				if err != nil {
					return rep, err
				}
			}
		}
	}
	if err := lk.check(); err != nil {
		return rep, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads * 2)
	for _, p := range del {
		rep.BytesFreed += size[p]
		g.Go(func() error {
			err := r.del(gctx, "packs/"+p.String())
			crashPrunePackDeleted.hit()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}
	rep.PacksDeleted = len(del)
	for _, sp := range keep {
		rep.RepositoryBytes += size[sp.ID]
	}
	for _, sp := range newPacks {
		for _, e := range sp.Entries {
			rep.RepositoryBytes += int64(e.Length)
		}
	}
	return rep, nil
}

// Forget applies the policy by removing the snapshot objects it does not
// keep, and nothing else: their data stays until a prune. It is cheap
// (no pack is read), so a schedule can apply retention at every run and
// prune less often. It takes no lock: removing a snapshot object never
// makes stored data unsafe to read, and a prune running meanwhile only
// keeps more than it could.
func (r *Repo) Forget(ctx context.Context, policy snapshot.Policy) (removed []snapshot.Snapshot, err error) {
	list, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	_, removed, _ = snapshot.Apply(list, policy)
	for _, s := range removed {
		if err := r.del(ctx, "snapshots/"+s.ID); err != nil {
			return nil, err
		}
	}
	return removed, nil
}
