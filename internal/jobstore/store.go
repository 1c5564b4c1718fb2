package jobstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Prefix is where records live in the state bucket.
const Prefix = "jobs/"

// ErrNotFound is returned when a job has no record.
var ErrNotFound = errors.New("job not found")

// ErrExists is returned by Create when the record already exists.
var ErrExists = errors.New("job record already exists")

// ErrConflict is returned by Update when the record kept changing under it.
var ErrConflict = errors.New("job record changed concurrently")

// ErrStop, returned by an Update's change function, ends the update
// without writing and without error.
var ErrStop = errors.New("no change")

// Store reads and writes job records.
type Store struct {
	S3     Objects
	Bucket string
}

// Objects is the part of the S3 API the store uses: an *s3.Client, or, in
// the process that runs the embedded server, its in-process
// s3server.Direct (same storage and conditions, no HTTP).
type Objects interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// New returns a Store over bucket.
func New(client Objects, bucket string) *Store { return &Store{S3: client, Bucket: bucket} }

// Key is the object key of a job's record.
func Key(id string) string { return Prefix + id + ".json" }

// Create writes rec if no record with its ID exists; it returns ErrExists
// (and writes no record) otherwise. The index follows: an unfinished job's
// active marker is written first, a finished one's done marker after.
// After ErrExists, an active marker may stand for a finished record: the
// caller that reads the existing record repairs it (RepairIndex), or the
// reconciler does.
func (s *Store) Create(ctx context.Context, rec *job.Record) error {
	if !rec.State.Terminal() {
		if err := s.putMarker(ctx, ActiveKey(rec.ID)); err != nil {
			return err
		}
	}
	body, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	in := &s3.PutObjectInput{
		Bucket:      &s.Bucket,
		Key:         aws.String(Key(rec.ID)),
		Body:        bytes.NewReader(body),
		IfNoneMatch: aws.String("*"),
		ContentType: aws.String("application/json"),
	}
	if rec.State.Terminal() {
		in.Tagging = aws.String(FinishedTag)
	}
	_, err = s.S3.PutObject(ctx, in)
	if isPrecondition(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("create job record %s: %w", rec.ID, err)
	}
	if rec.State.Terminal() {
		return s.markDone(ctx, rec)
	}
	return nil
}

// Get returns the record and its ETag, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*job.Record, string, error) {
	if err := job.CheckID(id); err != nil {
		return nil, "", err
	}
	out, err := s.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.Bucket, Key: aws.String(Key(id))})
	if isNotFound(err) {
		return nil, "", fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, "", fmt.Errorf("read job record %s: %w", id, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, "", fmt.Errorf("read job record %s: %w", id, err)
	}
	var rec job.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, "", fmt.Errorf("decode job record %s: %w", id, err)
	}
	return &rec, aws.ToString(out.ETag), nil
}

// Update applies change to the current record and writes it back only if
// nobody wrote in between, retrying on a conflict. change may be called
// several times, each time on a fresh copy; returning ErrStop ends the
// update without writing. It returns the record as written (or as last
// read, for ErrStop).
//
// The index follows the transition: a job that finishes gets its done
// marker and loses its active marker after the write; one put back in the
// queue (an operator's retry) gets its active marker before it. A crash in
// between is repaired by the reconciler.
func (s *Store) Update(ctx context.Context, id string, change func(*job.Record) error) (*job.Record, error) {
	rec, _, err := s.UpdateFrom(ctx, id, nil, "", change)
	return rec, err
}

// UpdateFrom is Update starting from a record the caller holds with its
// ETag (from its last write), which saves the read when nobody wrote
// since; it also returns the ETag of the record as written. known is not
// modified; with known nil it reads first, as Update does.
func (s *Store) UpdateFrom(ctx context.Context, id string, known *job.Record, knownETag string, change func(*job.Record) error) (*job.Record, string, error) {
	for try := 0; try < 20; try++ {
		var rec *job.Record
		var etag string
		if try == 0 && known != nil && knownETag != "" {
			c := *known
			c.Attempts = append([]job.Attempt(nil), known.Attempts...)
			c.Outputs = append([]job.Output(nil), known.Outputs...)
			rec, etag = &c, knownETag
		} else {
			var err error
			if rec, etag, err = s.Get(ctx, id); err != nil {
				return nil, "", err
			}
		}
		before := *rec
		if err := change(rec); errors.Is(err, ErrStop) {
			return rec, etag, nil
		} else if err != nil {
			return rec, etag, err
		}
		reopened := before.State.Terminal() && !rec.State.Terminal()
		if reopened {
			if err := s.putMarker(ctx, ActiveKey(id)); err != nil {
				return nil, "", err
			}
		}
		body, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return nil, "", err
		}
		in := &s3.PutObjectInput{
			Bucket:      &s.Bucket,
			Key:         aws.String(Key(id)),
			Body:        bytes.NewReader(body),
			IfMatch:     aws.String(etag),
			ContentType: aws.String("application/json"),
		}
		if rec.State.Terminal() {
			in.Tagging = aws.String(FinishedTag)
		}
		out, err := s.S3.PutObject(ctx, in)
		if isPrecondition(err) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("write job record %s: %w", id, err)
		}
		// The record is written: that is the outcome. A marker write that
		// fails now leaves an active marker for a finished job, or a done
		// marker for a reopened one; the reconciler repairs the first, and
		// readers of done markers check the record's state.
		switch {
		case !before.State.Terminal() && rec.State.Terminal():
			_ = s.markDone(ctx, rec)
		case reopened:
			_ = s.deleteMarker(ctx, DoneKey(before.State, finishedAt(&before), id))
		}
		return rec, aws.ToString(out.ETag), nil
	}
	return nil, "", fmt.Errorf("%w: %s", ErrConflict, id)
}

// IDs calls fn with the ID of every record, in key order.
func (s *Store) IDs(ctx context.Context, fn func(id string) error) error {
	p := s3.NewListObjectsV2Paginator(s.S3, &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: aws.String(Prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list job records: %w", err)
		}
		for _, o := range page.Contents {
			id := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(o.Key), Prefix), ".json")
			if !job.ValidID(id) {
				continue
			}
			if err := fn(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// List returns every record. It reads each one: meant for listings, not
// for hot paths.
func (s *Store) List(ctx context.Context) ([]*job.Record, error) {
	var recs []*job.Record
	err := s.IDs(ctx, func(id string) error {
		rec, _, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		recs = append(recs, rec)
		return nil
	})
	return recs, err
}

func isPrecondition(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	return false
}

// IsNotFound reports whether err is S3's answer for a missing object.
func IsNotFound(err error) bool { return isNotFound(err) }

func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	return false
}
