package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// Defaults of Config.
const (
	DefaultAddr       = "127.0.0.1:9001"
	DefaultRescan     = 30 * time.Second
	DefaultPageSize   = 50
	DefaultPartSize   = 8 << 20
	DefaultUploadConc = 2
	// DefaultWindow is how many finished jobs the dashboard keeps in
	// memory; older ones are paged from the store's index on demand.
	DefaultWindow = 5000
)

// Config configures the dashboard.
type Config struct {
	// Addr is the listen address HOST:PORT. A non-loopback host requires
	// Token.
	Addr string
	// Token, when set, is required on every request (once per browser: the
	// ?token= link sets a cookie). On a non-loopback Addr an empty Token is
	// generated at New; read it back with Server.Token.
	Token string
	// Rescan is how often the index is checked against the state bucket, a
	// fallback for changes the pipeline did not report.
	Rescan time.Duration
	// PageSize is the number of jobs per page.
	PageSize int
	// Window is how many finished jobs the in-memory index keeps (default
	// DefaultWindow): start-up reads that many, never the whole history.
	Window int
	// PartSize and UploadConcurrency bound an upload's memory:
	// PartSize × UploadConcurrency bytes in flight.
	PartSize          int64
	UploadConcurrency int
	// FallbackPort makes Start listen on a free port of the same host when
	// Addr's port is taken (for a default address, not one a person chose).
	FallbackPort bool
}

// WithDefaults fills in unset fields.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Rescan == 0 {
		c.Rescan = DefaultRescan
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.UploadConcurrency == 0 {
		c.UploadConcurrency = DefaultUploadConc
	}
	return c
}

// Validate names the first invalid field.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("dashboard.addr %q must be HOST:PORT: %v", c.Addr, err)
	}
	switch {
	case c.Rescan < time.Second:
		return fmt.Errorf("dashboard rescan interval must be at least 1s, got %s", c.Rescan)
	case c.PageSize < 1 || c.PageSize > 1000:
		return fmt.Errorf("dashboard page size must be between 1 and 1000, got %d", c.PageSize)
	case c.PartSize < 5<<20:
		return fmt.Errorf("dashboard upload part size must be at least 5 MiB, got %d", c.PartSize)
	case c.UploadConcurrency < 1 || c.UploadConcurrency > 16:
		return fmt.Errorf("dashboard upload concurrency must be between 1 and 16, got %d", c.UploadConcurrency)
	case c.Token != "" && len(c.Token) < 16:
		return errors.New("dashboard.token must be at least 16 characters")
	}
	return nil
}

// Deps are what the dashboard reads and drives.
type Deps struct {
	S3           *s3.Client // reaches the input and output buckets
	Store        *jobstore.Store
	InputBucket  string
	OutputBucket string
	// LogPath is where a job's log is (the worker volume's LogPath).
	LogPath func(id string) (string, error)
	// Retry puts a failed or dead job back in the queue and dispatches it.
	Retry func(ctx context.Context, id string) (*job.Record, error)
	// Snapshots is nil when snapshots are not configured.
	Snapshots Snapshots
	// Logf receives one line per notable event; nil is silent.
	Logf func(format string, args ...any)
	// Metrics, when set, is served at /metrics behind the same checks as
	// every page (the Host check on loopback, the token when one is set:
	// Prometheus sends it as a bearer token).
	Metrics http.Handler
}

// IsLoopback reports whether the host of addr (HOST:PORT) is a loopback
// address or "localhost".
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
