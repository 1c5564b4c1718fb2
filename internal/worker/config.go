package worker

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of Config.
const (
	DefaultLease       = 2 * time.Minute
	DefaultBackoff     = 2 * time.Second
	DefaultMaxBackoff  = 5 * time.Minute
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 2
	DefaultStall       = 2 * time.Minute
	DefaultLogMax      = 8 << 20
)

// Config configures a Worker.
type Config struct {
	OutputBucket string
	// Lease is how long a claim lasts without a heartbeat; the worker renews
	// it every Lease/3 while it runs.
	Lease time.Duration
	// Backoff is the wait after the first failed attempt; it doubles after
	// each failure, up to MaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// PartSize is the multipart part size for outputs; files up to it are
	// uploaded with one PUT.
	PartSize int64
	// UploadConcurrency is the number of parts in flight per file.
	UploadConcurrency int
	// StallTimeout fails a fetch or an upload during which no byte moved
	// for this long.
	StallTimeout time.Duration
	// LogMaxBytes caps what one attempt's processor writes to the job log:
	// the head and the tail are kept, with a line saying how much was cut.
	// Negative: no cap.
	LogMaxBytes int64
	// RetryInProcess makes Run wait out the backoff and try again itself,
	// as `conveyor worker run` does; otherwise Run returns a *RetryError and
	// the caller re-dispatches later.
	RetryInProcess bool
	// ConfigVersion and ProcessorVersion are written into the record of
	// every job this worker claims (job.Record's fields of the same name):
	// which configuration and which processor produced its outcome.
	ConfigVersion    string
	ProcessorVersion string
	// LogBucket, if set, receives a copy of the job's log when each
	// attempt ends, at jobstore.LogKey (`worker run` sets the state
	// bucket: its volume is on another machine than the client's).
	LogBucket string
}

// WithDefaults fills in unset fields.
func (c Config) WithDefaults() Config {
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.UploadConcurrency == 0 {
		c.UploadConcurrency = DefaultConcurrency
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = DefaultStall
	}
	if c.LogMaxBytes == 0 {
		c.LogMaxBytes = DefaultLogMax
	}
	return c
}

// Validate names the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.OutputBucket == "":
		return errors.New("buckets.output must be set")
	case c.Lease < 3*time.Second:
		return fmt.Errorf("worker.lease must be at least 3s, got %s", c.Lease)
	case c.Backoff < 0 || c.MaxBackoff < c.Backoff:
		return fmt.Errorf("retry.backoff (%s) must be positive and at most retry.max_backoff (%s)", c.Backoff, c.MaxBackoff)
	case c.PartSize < 5<<20:
		return fmt.Errorf("worker.part_size must be at least 5 MiB (the S3 minimum), got %d", c.PartSize)
	case c.UploadConcurrency < 1 || c.UploadConcurrency > 64:
		return fmt.Errorf("worker.upload_concurrency must be between 1 and 64, got %d", c.UploadConcurrency)
	case c.StallTimeout < 100*time.Millisecond:
		return fmt.Errorf("worker.stall_timeout must be at least 100ms, got %s", c.StallTimeout)
	case c.LogMaxBytes > 0 && c.LogMaxBytes < 4096:
		return fmt.Errorf("worker.log_max_bytes must be at least 4096 (or negative for no cap), got %d", c.LogMaxBytes)
	}
	return nil
}

// backoff is the wait after the given failed attempt: Backoff doubled per
// earlier failure, capped, with ±20% jitter so failures do not retry in step.
func (c Config) backoff(attempt int, jitter float64) time.Duration {
	d := c.Backoff
	for i := 1; i < attempt && d < c.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.MaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*jitter))
}
