package local

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
	"golang.org/x/sync/errgroup"
)

var errCorrupt = snapshot.ErrCorrupt

// MarshalText writes the hash in hex.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads a hex hash (without allocating: a tree of a
// million files holds about as many).
func (id *ID) UnmarshalText(b []byte) error {
	if len(b) != 2*len(id) {
		return fmt.Errorf("%q is not a blob hash", b)
	}
	if _, err := hex.Decode(id[:], b); err != nil {
		return fmt.Errorf("%q is not a blob hash", b)
	}
	return nil
}

// Entry types. Version 1 trees hold the first three only.
const (
	typeFile     = "f"
	typeDir      = "d"
	typeSymlink  = "l"
	typeHardlink = "h" // another name of an earlier file entry (Target)
	typeFIFO     = "p"
	typeChar     = "c" // character device (Rdev)
	typeBlock    = "b" // block device (Rdev)
)

// entry is one file, directory, link or special file of a snapshot. Path
// is relative to the source, slash-separated; "." is the source itself
// (version 2).
type entry struct {
	Path   string `json:"p"`
	Type   string `json:"t"`
	Mode   uint32 `json:"m"`
	MTime  int64  `json:"mt"` // Unix nanoseconds
	Size   int64  `json:"s,omitempty"`
	Inode  uint64 `json:"i,omitempty"`
	Target string `json:"l,omitempty"` // symlink target, or a hard link's first path
	Chunks []ID   `json:"c,omitempty"`
	// Version 2: owner and group (0 when omitted), device number,
	// extended attributes (user.*, and security.* and trusted.* when
	// taken as root), and whether the file has holes.
	UID    uint32            `json:"u,omitempty"`
	GID    uint32            `json:"g,omitempty"`
	Rdev   uint64            `json:"r,omitempty"`
	Xattrs map[string][]byte `json:"x,omitempty"`
	Sparse bool              `json:"sp,omitempty"`
	// Version 3: a directory's subtree, the tree blob of its entries;
	// Path is then the entry's name within its directory.
	Sub *ID `json:"st,omitempty"`
	// Path and Target exactly, when they are not valid UTF-8 (see
	// exactNames); only in a stored blob, never in memory.
	PathBytes   []byte `json:"pb,omitempty"`
	TargetBytes []byte `json:"lb,omitempty"`
	// Extended attributes whose names are not valid UTF-8: name, value,
	// name, value... (not in Xattrs in a stored blob).
	XattrBytes [][]byte `json:"xb,omitempty"`
}

// treeVersion is written by Create. Version 2 adds the root entry ".",
// owners, xattrs, hard links, holes, FIFOs and devices; a version 1 tree
// (no owner recorded) restores as before, owned by the restorer, with
// setuid and setgid dropped. Versions 1 and 2 are one tree blob for the
// whole snapshot; version 3 is a tree blob per directory (treedir.go),
// with the entries of version 2.
const treeVersion = 3

// tree is a snapshot's tree: every entry, sorted by path, parents first.
// It is the content of a version 1 or 2 tree blob, and what a version 3
// tree is read into.
type tree struct {
	Version int     `json:"version"`
	Entries []entry `json:"entries"`
	// Subtrees: every tree blob the snapshot uses (read, not stored).
	Subtrees []ID `json:"-"`
}

// loadBlob reads one blob by range and checks its hash.
func (r *Repo) loadBlob(ctx context.Context, x *index, id ID) ([]byte, error) {
	loc, ok := x.lookup(id)
	if !ok {
		return nil, fmt.Errorf("%w: blob %s is in no index", errCorrupt, id)
	}
	name := "packs/" + loc.Pack.String()
	stored, err := r.getRange(ctx, name, int64(loc.Offset), int64(loc.Length))
	if errors.Is(err, errNoKey) {
		return nil, fmt.Errorf("%w: %s is missing (it holds blob %s)", errCorrupt, r.key(name), id)
	}
	if err != nil {
		return nil, err
	}
	data, err := r.newCodec().open(blobEntry{ID: id, location: loc}, stored)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errCorrupt, r.key(name), err)
	}
	return data, nil
}

// loadRoot reads snapshot s's tree blob: the whole tree of a version 1
// or 2 snapshot, the source directory's entry alone (checked) of a
// version 3 one.
func (r *Repo) loadRoot(ctx context.Context, x *index, s snapshot.Snapshot) (ID, *tree, error) {
	id, err := parseID(s.Tree)
	if err != nil {
		return ID{}, nil, fmt.Errorf("%w: snapshot %s: %v", errCorrupt, s.ID, err)
	}
	b, err := r.loadBlob(ctx, x, id)
	if err != nil {
		return ID{}, nil, fmt.Errorf("tree of snapshot %s: %w", s.ID, err)
	}
	var t tree
	if err := json.Unmarshal(b, &t); err != nil {
		return ID{}, nil, fmt.Errorf("%w: tree of snapshot %s: %v", errCorrupt, s.ID, err)
	}
	if t.Version >= 3 && (len(t.Entries) != 1 || t.Entries[0].Path != "." || t.Entries[0].Type != typeDir || t.Entries[0].Sub == nil) {
		return ID{}, nil, fmt.Errorf("%w: tree of snapshot %s: a version 3 tree's root blob holds the source directory alone", errCorrupt, s.ID)
	}
	return id, &t, nil
}

// putSnapshot writes a snapshot object (sealed in an encrypted
// repository), never over an existing one.
func (r *Repo) putSnapshot(ctx context.Context, s snapshot.Snapshot) error {
	body, _ := json.MarshalIndent(s, "", "  ")
	if r.sealer != nil {
		body = r.sealer.seal(nil, body, adSnapshot)
	}
	return r.put(ctx, "snapshots/"+s.ID, body, true)
}

// List implements snapshot.Driver.
func (r *Repo) List(ctx context.Context) ([]snapshot.Snapshot, error) {
	objs, err := r.list(ctx, "snapshots/")
	if err != nil {
		return nil, err
	}
	out := make([]snapshot.Snapshot, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, o := range objs {
		g.Go(func() error {
			b, err := r.get(gctx, o.Name)
			if errors.Is(err, errNoKey) {
				return nil // deleted meanwhile
			}
			if err != nil {
				return err
			}
			if b, err = r.sealer.open(nil, b, adSnapshot); err != nil {
				return fmt.Errorf("%w: %s %v", errCorrupt, r.key(o.Name), err)
			}
			if err := json.Unmarshal(b, &out[i]); err != nil {
				return fmt.Errorf("%w: %s: %v", errCorrupt, r.key(o.Name), err)
			}
			out[i].ID = strings.TrimPrefix(o.Name, "snapshots/")
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	list := out[:0]
	for _, s := range out {
		if s.ID != "" {
			list = append(list, s)
		}
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	return list, nil
}

// Find returns the snapshot whose ID is id, starts with id (when only
// one does) or, for "latest", the newest.
func (r *Repo) Find(ctx context.Context, id string) (snapshot.Snapshot, error) {
	list, err := r.List(ctx)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	return find(list, id)
}

func find(list []snapshot.Snapshot, id string) (snapshot.Snapshot, error) {
	if id == "latest" && len(list) > 0 {
		return list[len(list)-1], nil
	}
	var match []snapshot.Snapshot
	for _, s := range list {
		if s.ID == id {
			return s, nil
		}
		if id != "" && strings.HasPrefix(s.ID, id) {
			match = append(match, s)
		}
	}
	if len(match) == 1 {
		return match[0], nil
	}
	if len(match) > 1 {
		return snapshot.Snapshot{}, fmt.Errorf("%q names %d snapshots; give more of the ID", id, len(match))
	}
	return snapshot.Snapshot{}, fmt.Errorf("%w: %q; 'conveyor snapshot list' shows them", snapshot.ErrNotFound, id)
}

// Delete implements snapshot.Driver.
func (r *Repo) Delete(ctx context.Context, ids ...string) error {
	list, err := r.List(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		s, err := find(list, id)
		if err != nil {
			return err
		}
		if err := r.del(ctx, "snapshots/"+s.ID); err != nil {
			return err
		}
	}
	return nil
}

func snapshotName(t time.Time) string {
	return t.UTC().Format("20060102T150405Z") + "-" + newID()[:8]
}
