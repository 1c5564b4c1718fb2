package local

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

// ExternalStore is an S3-compatible store (MinIO, Ceph RGW, a versitygw
// gateway, Amazon S3) that holds the three buckets instead of the
// embedded server. The buckets must exist; the input bucket should be
// versioned.
type ExternalStore struct {
	// Endpoint is the store's URL, for messages and run.json.
	Endpoint string
	// Client reaches it, with its credentials, region and TLS settings.
	Client *s3.Client
}

// store is where the buckets are, as Start opened it.
type store struct {
	server    *s3server.Server // nil for an external store
	client    *s3.Client
	objects   jobstore.Objects // what the job store and the worker use
	endpoint  string
	versioned bool // the input bucket keeps versions
}

// openStore starts the embedded server, or checks the external store's
// buckets. Errors say what to do.
func (p *Pipeline) openStore(ctx context.Context, creds Credentials) (store, error) {
	cfg := p.cfg
	if ext := cfg.External; ext != nil {
		versioned, err := checkExternal(ctx, *ext, cfg.Buckets, p.logf)
		if err != nil {
			return store{}, err
		}
		// One code path: the S3 API, for every component.
		return store{client: ext.Client, objects: ext.Client, endpoint: ext.Endpoint, versioned: versioned}, nil
	}
	// The server outlives ctx (a Ctrl-C): Stop ends it after the workers
	// have handed their jobs back through it.
	srv, err := s3server.Start(context.WithoutCancel(ctx), s3server.Config{
		DataDir:   p.Paths.S3Root(),
		Addr:      cfg.S3Addr,
		AccessKey: creds.AccessKeyID,
		SecretKey: creds.SecretAccessKey,
		Region:    cfg.Region,
		Buckets:   []string{cfg.Buckets.Input, cfg.Buckets.Output, cfg.Buckets.State},
		// Versioned as on AWS, so that jobs are keyed on version IDs:
		// uploading content a key held before is a new version, a new job.
		Versioned: []string{cfg.Buckets.Input},
		// The hook runs before the upload's response is sent: queue only.
		OnEvent:      func(n []byte) { p.events.push(n) },
		EventBuckets: []string{cfg.Buckets.Input},
	})
	if err != nil {
		return store{}, err
	}
	client := s3server.NewClient(srv.Endpoint(), creds.AccessKeyID, creds.SecretAccessKey, cfg.Region)
	// The components in this process reach the buckets' storage
	// directly: the same engine and conditional writes, without HTTP and
	// SigV4 on both sides (most of a record write's cost). Clients in
	// other processes (`conveyor jobs`, `worker run`) use the S3 API.
	return store{server: srv, client: client, objects: srv.Direct(), endpoint: srv.Endpoint(), versioned: true}, nil
}

// checkExternal makes sure the three buckets exist and can be read, and
// reports whether the input bucket is versioned. An unversioned input
// bucket works, with less: the logf line says what.
func checkExternal(ctx context.Context, ext ExternalStore, b Buckets, logf func(string, ...any)) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, bk := range []struct{ setting, name string }{{"buckets.input", b.Input}, {"buckets.output", b.Output}, {"buckets.state", b.State}} {
		_, err := ext.Client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bk.name)})
		if err != nil {
			return false, bucketError(ext.Endpoint, bk.setting, bk.name, err)
		}
	}
	v, err := ext.Client.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(b.Input)})
	if err != nil {
		return false, fmt.Errorf("read the versioning of bucket %q at %s: %w", b.Input, ext.Endpoint, err)
	}
	if v.Status == types.BucketVersioningStatusEnabled {
		return true, nil
	}
	logf("warning: input bucket %q at %s is not versioned: jobs are keyed on ETags, so uploading content a key held before starts no new job, and content overwritten before its job reads it is never processed (only the newest is). Enable versioning (aws s3api put-bucket-versioning --bucket %s --versioning-configuration Status=Enabled --endpoint-url %s) and restart",
		b.Input, ext.Endpoint, b.Input, ext.Endpoint)
	return false, nil
}

// bucketError turns HeadBucket's failure into what to do.
func bucketError(endpoint, setting, name string, err error) error {
	var re interface{ HTTPStatusCode() int }
	status := 0
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case status == http.StatusNotFound || code == "NoSuchBucket" || code == "NotFound":
		return fmt.Errorf("bucket %q (%s) does not exist at %s: create it (aws s3 mb s3://%s --endpoint-url %s), with versioning for the input bucket, or set %s to an existing bucket", name, setting, endpoint, name, endpoint, setting)
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return fmt.Errorf("access to bucket %q (%s) at %s is denied (HTTP %d): check the credentials (s3.access_key_id and s3.secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and that they may read and write it", name, setting, endpoint, status)
	case status != 0:
		return fmt.Errorf("check bucket %q (%s) at %s: HTTP %d: %w", name, setting, endpoint, status, err)
	default:
		return fmt.Errorf("cannot reach the S3 store at %s (s3.endpoint) to check bucket %q: %w; check the URL, that the store runs, and s3.ca_file for a private CA", endpoint, name, err)
	}
}
