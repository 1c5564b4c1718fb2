package job

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// State is where a job is in its life.
type State string

// The states of a job. Succeeded, Dead and Superseded are terminal.
const (
	Queued    State = "queued"    // record created, waiting for a worker
	Running   State = "running"   // a worker holds it (see Record.Owner, Token, LeaseUntil)
	Retrying  State = "retrying"  // an attempt failed; another follows after NextAttemptAt
	Succeeded State = "succeeded" // outputs published
	Dead      State = "dead"      // its processing failed: attempts exhausted or a permanent error; log and scratch kept
	// Superseded: a newer version of the input key exists (or the key was
	// deleted) and this job had not published. Not a failure, not retried.
	Superseded State = "superseded"
)

// States lists every state, in life order.
var States = []State{Queued, Running, Retrying, Succeeded, Dead, Superseded}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// Terminal reports whether no more work happens to a job in state s.
func (s State) Terminal() bool { return s == Succeeded || s == Dead || s == Superseded }

var idPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// IDPattern is the shape of every job ID; the SSM document enforces the same.
const IDPattern = `^[0-9a-f]{32}$`

// ValidID reports whether id has the shape of a job ID. Only valid IDs are
// ever turned into paths or passed to other processes.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// ErrInvalidID is returned for a string that is not a job ID.
var ErrInvalidID = errors.New("invalid job ID: want 32 lowercase hex digits")

// CheckID returns ErrInvalidID, with the offending value, for a malformed id.
func CheckID(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("%w (got %q)", ErrInvalidID, id)
	}
	return nil
}

// ID derives the job ID of one object version: the same object version
// always gives the same ID, so duplicated events map to one job, and new
// content under the same key (a new ETag or version ID) is a new job.
func ID(bucket, key, versionOrETag string) string {
	h := sha256.New()
	for _, part := range []string{"conveyor/job/v1", bucket, key, versionOrETag} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Revision picks what identifies an object's content: its version ID when
// the bucket is versioned, otherwise its ETag.
func Revision(versionID, etag string) string {
	if versionID != "" && versionID != "null" {
		return "v:" + versionID
	}
	return "e:" + etag
}

// InputVersion is the revision of the input the job is about, as output
// objects name it in their metadata: the version ID, or "etag:<ETag>" in an
// unversioned bucket.
func (r *Record) InputVersion() string {
	if r.VersionID != "" && r.VersionID != "null" {
		return r.VersionID
	}
	return "etag:" + r.ETag
}

// Output is one file a job produced, as uploaded.
type Output struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Attempt is the history of one try.
type Attempt struct {
	Number     int       `json:"number"`
	Owner      string    `json:"owner"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// Timings are the durations of the last attempt's phases, in milliseconds.
type Timings struct {
	QueuedMS  int64 `json:"queued_ms"`
	FetchMS   int64 `json:"fetch_ms"`
	ProcessMS int64 `json:"process_ms"`
	UploadMS  int64 `json:"upload_ms"`
	TotalMS   int64 `json:"total_ms"`
}

// Record is a job's state, stored as JSON at state/jobs/<id>.json.
type Record struct {
	ID        string `json:"id"`
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	VersionID string `json:"version_id,omitempty"`
	ETag      string `json:"etag,omitempty"`
	Size      int64  `json:"size"`

	State       State `json:"state"`
	Attempt     int   `json:"attempt"` // attempts started so far
	MaxAttempts int   `json:"max_attempts"`

	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	StartedAt     *time.Time `json:"started_at,omitempty"` // start of the current or last attempt
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`

	// Owner is the worker holding a running job, "<volume-id>/<process
	// nonce>"; Token is the claim token of its attempt, which every renewal
	// and the outcome write must present; LeaseUntil is how long the claim
	// lasts without a heartbeat.
	Owner      string     `json:"owner,omitempty"`
	Token      string     `json:"token,omitempty"`
	LeaseUntil *time.Time `json:"lease_until,omitempty"`
	// Handbacks counts attempts a graceful stop of the worker gave back
	// without counting them.
	Handbacks int `json:"handbacks,omitempty"`
	// Reason says why a superseded job ended (the input's current version).
	Reason string `json:"reason,omitempty"`

	Dispatcher string `json:"dispatcher,omitempty"` // "local" or "ssm"
	CommandID  string `json:"command_id,omitempty"` // SSM command ID, when dispatched through SSM
	// DispatchedAt is when the job was last handed to the dispatcher, and
	// Dispatches how often since a worker last claimed it (or since it was
	// created): deliveries that never reached a worker.
	DispatchedAt *time.Time `json:"dispatched_at,omitempty"`
	Dispatches   int        `json:"dispatches,omitempty"`

	// ConfigVersion and ProcessorVersion name what produced the job's
	// last attempt: a hash of the worker's effective configuration, and
	// the processor (a bundle's SHA-256, or a built-in's name with the
	// Conveyor version). Set by the worker when it claims the job.
	ConfigVersion    string `json:"config_version,omitempty"`
	ProcessorVersion string `json:"processor_version,omitempty"`

	ExitCode    *int      `json:"exit_code,omitempty"`
	Error       string    `json:"error,omitempty"`
	InputSHA256 string    `json:"input_sha256,omitempty"`
	Outputs     []Output  `json:"outputs,omitempty"`
	OutputBytes int64     `json:"output_bytes,omitempty"`
	Log         string    `json:"log,omitempty"` // path of the log on the worker's volume
	Timings     Timings   `json:"timings"`
	Attempts    []Attempt `json:"attempts,omitempty"`
}

// New returns the record of a newly created job.
func New(bucket, key, versionID, etag string, size int64, maxAttempts int, now time.Time) *Record {
	return &Record{
		ID:          ID(bucket, key, Revision(versionID, etag)),
		Bucket:      bucket,
		Key:         key,
		VersionID:   versionID,
		ETag:        etag,
		Size:        size,
		State:       Queued,
		MaxAttempts: maxAttempts,
		CreatedAt:   now.UTC(),
		UpdatedAt:   now.UTC(),
	}
}
