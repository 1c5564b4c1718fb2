package local

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// RepairReport says what Repair found, kept and lost.
type RepairReport struct {
	Packs        int      `json:"packs"`         // packs read
	Blobs        int      `json:"blobs"`         // blobs in the new index
	DamagedPacks []string `json:"damaged_packs"` // replaced by what could be read of them
	MissingPacks []string `json:"missing_packs"` // named by an old index, gone from the bucket
	Salvaged     int      `json:"salvaged"`      // blobs copied out of damaged packs
	LostBlobs    int      `json:"lost_blobs"`    // indexed before, readable nowhere now
	// Incomplete lists, per snapshot, the files with data that is lost;
	// Unreadable the snapshots whose tree itself is lost.
	Incomplete map[string][]string `json:"incomplete"`
	Unreadable []string            `json:"unreadable"`
}

// Lost reports whether any snapshot lost data.
func (r RepairReport) Lost() bool { return len(r.Incomplete) > 0 || len(r.Unreadable) > 0 }

// packScan is what one pack held.
type packScan struct {
	id      ID
	entries []blobEntry // readable blobs, in this pack
	salvage []salvaged  // good blobs of a damaged pack
	damaged string      // why, "" when sound
}

type salvaged struct {
	e      blobEntry
	stored []byte
}

// Repair rebuilds the index from the packs themselves, under the
// exclusive lock. Every pack is read whole: a sound one (its hash matches
// its name) is indexed from its own table; of a damaged one, each blob
// its table names is checked against its hash, the good ones are copied
// into a new pack and the damaged pack is deleted. The old index objects
// are then replaced by one new one. What no pack holds any more is lost:
// the report names the snapshots and files that are now incomplete
// ('conveyor snapshot delete' removes those snapshots). Old index objects
// that cannot be read are replaced too.
func (r *Repo) Repair(ctx context.Context) (RepairReport, error) {
	defer tightGC()()
	rep := RepairReport{Incomplete: map[string][]string{}}
	lk, err := r.lock(ctx, "repair", true)
	if err != nil {
		return rep, err
	}
	defer lk.release()
	ctx = lk.ctx
	old, oldFiles := r.loadIndexLenient(ctx)
	stored, err := r.list(ctx, "packs/")
	if err != nil {
		return rep, err
	}
	var mu sync.Mutex
	var scans []packScan
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Uploads)
	present := map[ID]bool{}
	for _, o := range stored {
		id, err := parseID(strings.TrimPrefix(o.Name, "packs/"))
		if err != nil {
			continue
		}
		present[id] = true
		g.Go(func() error {
			body, err := r.get(gctx, o.Name)
			if errors.Is(err, errNoKey) {
				return nil
			}
			if err != nil {
				return err
			}
			sc := r.scanPack(id, body, old.packs[id])
			mu.Lock()
			scans = append(scans, sc)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}
	sort.Slice(scans, func(i, j int) bool { return string(scans[i].id[:]) < string(scans[j].id[:]) })
	var sound []sealedPack
	pk := newPacker(ctx, r)
	pk.crash = crashRepairPack
	seen := map[ID]bool{}
	var damaged []ID
	for _, sc := range scans {
		rep.Packs++
		if sc.damaged == "" {
			sound = append(sound, sealedPack{ID: sc.id, Entries: sc.entries})
			for _, e := range sc.entries {
				seen[e.ID] = true
			}
			continue
		}
		r.cfg.Logf("snapshot: repair: %s is damaged (%s): %d blob(s) can be read", r.key("packs/"+sc.id.String()), sc.damaged, len(sc.salvage))
		rep.DamagedPacks = append(rep.DamagedPacks, r.key("packs/"+sc.id.String()))
		damaged = append(damaged, sc.id)
	}
	for _, sc := range scans {
		for _, s := range sc.salvage {
			if seen[s.e.ID] {
				continue
			}
			seen[s.e.ID] = true
			rep.Salvaged++
			if err := pk.add(s.e.ID, s.e.Type, s.stored, s.e.Compressed, int(s.e.Raw)); err != nil {
				pk.finish()
				return rep, err
			}
		}
	}
	newPacks, err := pk.finish()
	if err != nil {
		return rep, err
	}
	for p := range old.packs {
		if !present[p] {
			rep.MissingPacks = append(rep.MissingPacks, r.key("packs/"+p.String()))
		}
	}
	sort.Strings(rep.MissingPacks)
	lost := map[ID]bool{}
	old.each(func(id ID, _ slot) {
		if !seen[id] {
			lost[id] = true
		}
	})
	all := append(sound, newPacks...)
	x := newIndex()
	for _, sp := range all {
		x.addPack(sp)
		rep.Blobs += len(sp.Entries)
	}
	if err := lk.check(); err != nil {
		return rep, err
	}
	name, err := r.writeIndex(ctx, all)
	crashRepairIndex.hit()
	if err != nil {
		return rep, err
	}
	if err := lk.check(); err != nil {
		return rep, err
	}
	for _, f := range oldFiles {
		if f != name {
			err := r.del(ctx, f)
			crashRepairIndexDeleted.hit()
			if err != nil {
				return rep, err
			}
		}
	}
	for _, p := range damaged {
		err := r.del(ctx, "packs/"+p.String())
		crashRepairPackDeleted.hit()
		if err != nil {
			return rep, err
		}
	}
	// What the snapshots lost.
	list, err := r.List(ctx)
	if err != nil {
		return rep, err
	}
	// Every snapshot read whole (a damaged file is named in each snapshot
	// that has it), a directory at a time.
	tc := newTreeCache(r, x)
	for _, s := range list {
		var incomplete []string
		var lostHere []ID
		err := r.eachEntry(ctx, x, tc, s, nil, func(ID) {}, func(p string, e *entry) error {
			complete := true
			for _, c := range e.Chunks {
				if _, ok := x.lookup(c); !ok {
					lostHere, complete = append(lostHere, c), false
				}
			}
			if !complete {
				incomplete = append(incomplete, p)
			}
			return nil
		})
		if err != nil {
			rep.Unreadable = append(rep.Unreadable, s.ID)
			if tid, err := parseID(s.Tree); err == nil {
				lost[tid] = true
			}
			continue
		}
		for _, c := range lostHere {
			lost[c] = true
		}
		if len(incomplete) > 0 {
			rep.Incomplete[s.ID] = incomplete
		}
	}
	rep.LostBlobs = len(lost)
	return rep, nil
}

// scanPack reads one pack: its own table when its hash matches its name;
// otherwise whatever blobs of its table (or, when the table is unreadable
// too, of the old index's entries for it) still match their hashes.
func (r *Repo) scanPack(id ID, body []byte, indexed []blobEntry) packScan {
	sc := packScan{id: id}
	es, err := parsePack(r.sealer, id, body)
	if err == nil {
		sc.entries = es
		return sc
	}
	sc.damaged = err.Error()
	cand, terr := packTable(r.sealer, id, body)
	if terr != nil {
		cand = indexed
	}
	cd := r.newCodec()
	for _, e := range cand {
		end := int(e.Offset) + int(e.Length)
		if end > len(body) {
			continue
		}
		stored := body[e.Offset:end]
		if _, err := cd.open(e, stored); err == nil {
			sc.salvage = append(sc.salvage, salvaged{e: e, stored: append([]byte(nil), stored...)})
		}
	}
	return sc
}

// loadIndexLenient reads every index object it can; unreadable ones are
// named in the log and in files (to be replaced), not an error.
func (r *Repo) loadIndexLenient(ctx context.Context) (*index, []string) {
	x := newIndex()
	objs, err := r.list(ctx, "index/")
	if err != nil {
		r.cfg.Logf("snapshot: repair: list the index: %v", err)
		return x, nil
	}
	var files []string
	for _, o := range objs {
		files = append(files, o.Name)
		b, err := r.get(ctx, o.Name)
		if err == nil {
			var packs []sealedPack
			if packs, err = decodeIndex(r.sealer, b); err == nil {
				for _, sp := range packs {
					x.addPack(sp)
				}
				continue
			}
		}
		r.cfg.Logf("snapshot: repair: %s cannot be read (%v): it is rebuilt from the packs", r.key(o.Name), err)
	}
	return x, files
}

// String summarizes the report for a person.
func (r RepairReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "index rebuilt from %d pack(s): %d blob(s)", r.Packs, r.Blobs)
	if len(r.DamagedPacks) > 0 {
		fmt.Fprintf(&b, "; %d damaged pack(s) replaced by the %d blob(s) that could be read:\n  %s", len(r.DamagedPacks), r.Salvaged, strings.Join(r.DamagedPacks, "\n  "))
	}
	if len(r.MissingPacks) > 0 {
		fmt.Fprintf(&b, "\n%d pack(s) an old index named are missing:\n  %s", len(r.MissingPacks), strings.Join(r.MissingPacks, "\n  "))
	}
	if !r.Lost() {
		b.WriteString("\nevery snapshot is complete")
		return b.String()
	}
	fmt.Fprintf(&b, "\n%d blob(s) are lost.", r.LostBlobs)
	for _, id := range r.Unreadable {
		fmt.Fprintf(&b, "\nsnapshot %s: its file list is lost; nothing of it can be restored", id)
	}
	ids := make([]string, 0, len(r.Incomplete))
	for id := range r.Incomplete {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "\nsnapshot %s: %d file(s) incomplete:\n    %s", id, len(r.Incomplete[id]), strings.Join(r.Incomplete[id], "\n    "))
	}
	b.WriteString("\nRestoring these snapshots fails on the files named; 'conveyor snapshot delete ID' removes a snapshot, and prune then reclaims its data.")
	return b.String()
}
