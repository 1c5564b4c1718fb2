package s3server

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultAddr   = "127.0.0.1:9000"
	DefaultRegion = "us-east-1"
)

// Gateway limits. The server is meant for one machine on loopback, so these
// bound resource use rather than tune throughput.
const (
	maxConnections      = 4096
	maxRequests         = 1024
	multipartMaxParts   = 10000
	posixConcurrency    = 256
	copyObjectThreshold = 5 << 30 // the S3 limit for a single CopyObject
)

// Config describes one embedded S3 server.
type Config struct {
	// DataDir is the absolute path of the directory that holds the buckets:
	// each bucket is a directory under it (posix backend). It is created if
	// absent and must be on a filesystem with user extended attributes.
	DataDir string
	// Addr is the TCP address to listen on, HOST:PORT, e.g. "127.0.0.1:9000".
	// Port 0 is not supported: clients need to know the port.
	Addr string
	// AccessKey and SecretKey are the only credentials the server accepts
	// (SigV4).
	AccessKey string
	SecretKey string
	// Region is reported to clients and put in events; default "us-east-1".
	Region string
	// Buckets are created at start if absent; existing ones are kept.
	Buckets []string
	// Versioned are buckets whose versioning Start switches on (S3's
	// PutBucketVersioning Enabled), creating them if absent, as the input
	// bucket is versioned on AWS: every upload gets a new version ID, so
	// uploading the same content again is a new object version. A bucket
	// that already holds objects keeps them as version "null". The older
	// versions live in VersionsDir, outside DataDir.
	Versioned []string
	// OnEvent receives, for every object created in any bucket (PutObject,
	// CompleteMultipartUpload, CopyObject, POST Object) with a success
	// response, an S3 event notification document as JSON
	// ({"Records":[...]}, one record). It is called synchronously before the
	// HTTP response is sent: it must not block. EventName is
	// "ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload",
	// "ObjectCreated:Copy" or "ObjectCreated:Post"; size is 0 for the
	// middle two and for a POST answered with a redirect (HEAD the object
	// for it). In a versioned bucket the version ID is the new object's,
	// except for a POST answered with a redirect, where versitygw does not
	// say it. Optional.
	OnEvent func(notification []byte)
	// EventBuckets, when set, limits events to objects created in these
	// buckets, as S3 notifications are configured per bucket. The pipeline
	// watches its input bucket only: its own writes to the state and output
	// buckets then cost no event.
	EventBuckets []string
	// Logf receives the few things worth logging (a hook that could not
	// build an event, the gateway stopping on an error). Optional.
	Logf func(format string, args ...any)
}

// WithDefaults returns a copy of c with empty fields that have a default set
// to it.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	return c
}

// Validate reports the first field that cannot work, in one sentence that
// names the field and what is expected.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("DataDir must be set to the directory that holds the buckets")
	}
	if !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("DataDir %q must be an absolute path", c.DataDir)
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil || host == "" {
		return fmt.Errorf("Addr %q must be HOST:PORT, e.g. %s", c.Addr, DefaultAddr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("Addr %q must have a port between 1 and 65535", c.Addr)
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		return errors.New("AccessKey and SecretKey must both be set")
	}
	if c.Region == "" {
		return errors.New("Region must be set, e.g. " + DefaultRegion)
	}
	for _, b := range c.Buckets {
		if b == "" {
			return errors.New("Buckets must not contain an empty name")
		}
	}
	for _, b := range c.Versioned {
		if b == "" {
			return errors.New("Versioned must not contain an empty name")
		}
	}
	return nil
}

// VersionsDir is where the server keeps the older versions of the objects
// of versioned buckets: the directory beside DataDir named after it with
// ".versions" appended (/srv/s3 -> /srv/s3.versions). versitygw refuses a
// versioning directory inside DataDir, where it would also be listed as a
// bucket; beside it, it is neither a bucket nor inside one. Under it, each
// versioned bucket has a directory, and each key one at
// <bucket>/<h[0:2]>/<h[2:4]>/<h[4:6]>/<h>, h the hex SHA-256 of the key,
// holding one file per older version, named by its version ID ("null" for
// an object stored before versioning was on).
func (c Config) VersionsDir() string {
	return filepath.Clean(c.DataDir) + ".versions"
}
