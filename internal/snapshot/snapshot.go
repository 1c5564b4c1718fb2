package snapshot

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors of every driver.
var (
	// ErrNotFound: no snapshot has the ID given.
	ErrNotFound = errors.New("snapshot not found")
	// ErrLocked: another process holds the repository in a way that
	// conflicts (prune while a snapshot is being taken, say).
	ErrLocked = errors.New("snapshot repository is locked")
	// ErrCorrupt: an object read back does not match its hash, or is
	// missing. The error's text names the object.
	ErrCorrupt = errors.New("snapshot repository is damaged")
	// ErrLockLost: the operation's lock could not be refreshed in time,
	// or was removed by another process that judged it stale; the
	// operation stopped before writing anything that depended on it.
	ErrLockLost = errors.New("snapshot repository lock lost")
	// ErrWrongKey: the repository is encrypted and the password (or
	// other key) given does not open its master key, or none was given.
	ErrWrongKey = errors.New("the snapshot password does not open this repository's key; set snapshot.password_file or CONVEYOR_SNAPSHOT_PASSWORD to the password used when it was created")
)

// Snapshot describes one snapshot.
type Snapshot struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Parent string    `json:"parent,omitempty"`
	Host   string    `json:"host,omitempty"`
	Source string    `json:"source,omitempty"` // the directory or volume snapshotted
	Stats  Stats     `json:"stats"`
	// Driver-specific: the local driver's tree root, EBS's state and tags.
	Tree  string            `json:"tree,omitempty"`
	State string            `json:"state,omitempty"`
	Tags  map[string]string `json:"tags,omitempty"`
}

// Stats are a snapshot's sizes. BytesAdded is what the snapshot added to
// the repository (compressed), zero when the driver cannot tell.
type Stats struct {
	Files      int   `json:"files"`
	Dirs       int   `json:"dirs"`
	Bytes      int64 `json:"bytes"`
	BytesAdded int64 `json:"bytes_added"`
	// FilesRead counts files read this time (the others were unchanged).
	FilesRead int `json:"files_read"`
}

// CreateOptions tune one Create.
type CreateOptions struct {
	// Progress, if set, is called about once a second with the work done.
	Progress func(Progress)
	// Tags are stored with the snapshot (Snapshot.Tags); retention can
	// keep snapshots by tag (Policy.KeepTags).
	Tags map[string]string
}

// RestoreOptions tune one Restore.
type RestoreOptions struct {
	// Target is the directory to restore into (local driver). It must be
	// empty or absent unless InPlace is set.
	Target string
	// InPlace replaces the volume's content: files absent from the
	// snapshot are removed. The caller checks that nothing uses it.
	InPlace bool
	// IgnoreOwner restores as the running user even as root: no file
	// gets its snapshot owner, and setuid and setgid are dropped where
	// the owner (group) differs, as for a restore by an ordinary user.
	IgnoreOwner bool
	// Buffered writes every file through the page cache, as most tools
	// do. By default the local driver writes the bulk of large files
	// straight to the disk (O_DIRECT), so that the restored data is on
	// the disk when Restore returns and the machine's page cache is left
	// alone; Buffered returns sooner where memory is fast and the disk
	// slow, with the data still to be written back.
	Buffered bool
	Progress func(Progress)
}

// Progress is the work done so far by a long operation.
type Progress struct {
	Files      int64 // files handled
	Bytes      int64 // bytes handled
	TotalBytes int64 // bytes to handle, 0 when unknown
	BytesAdded int64 // bytes added to the repository
}

// Driver takes and restores snapshots of one volume.
type Driver interface {
	// List returns every snapshot, oldest first.
	List(ctx context.Context) ([]Snapshot, error)
	// Create takes a snapshot and returns it once it is complete (local)
	// or started (EBS, whose State says "pending"). It returns ErrLocked
	// when a conflicting operation holds the repository.
	Create(ctx context.Context, opts CreateOptions) (Snapshot, error)
	// Restore writes the snapshot back. It returns ErrNotFound for an
	// unknown ID and an error wrapping ErrCorrupt, naming the object, when
	// stored data is missing or damaged.
	Restore(ctx context.Context, id string, opts RestoreOptions) error
	// Delete removes snapshots by ID; their data is reclaimed later
	// (local: by Prune). It returns ErrNotFound for an unknown ID.
	Delete(ctx context.Context, ids ...string) error
}
