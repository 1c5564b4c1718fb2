package jobstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
)

// The index lets every operation cost what is in flight, not the history.
// Beside the records it keeps empty marker objects whose keys say it all:
//
//	active/<id>                       while the job is unfinished
//	done/<state>/<invhour>/<inv>-<id> once it finished; inv is MaxInt64 minus
//	                                  the finish time in Unix nanoseconds, 19
//	                                  digits, so a listing is newest first;
//	                                  invhour is the same for the start of
//	                                  that hour
//
// The hour level keeps every "folder" small: the embedded server reads a
// whole folder to list any page of it, so a million markers in one folder
// would make every listing cost the history.
//
// A job entering the unfinished set gets its active marker before its
// record is written; one leaving it gets its done marker and loses its
// active marker after. A crash between the two leaves an active marker
// without a record, or with a finished record: the reconciler, which reads
// every active marker, repairs both (RepairIndex). Finished records carry
// the tag FinishedTag, so a lifecycle rule can expire them on AWS; locally
// the reconciler removes them after the retention period.
const (
	ActivePrefix = "active/"
	DonePrefix   = "done/"
	// FinishedTag is the object tag of finished records ("key=value").
	FinishedTag = "conveyor-finished=true"
)

// ActiveKey is the active marker of a job.
func ActiveKey(id string) string { return ActivePrefix + id }

// DoneKey is the done marker of a job that finished in state at t.
func DoneKey(state job.State, t time.Time, id string) string {
	return DoneStatePrefix(state) + invTime(t.Truncate(time.Hour)) + "/" + invTime(t) + "-" + id
}

// DoneStatePrefix is the prefix of the done markers of one state.
func DoneStatePrefix(state job.State) string { return DonePrefix + string(state) + "/" }

func invTime(t time.Time) string {
	return fmt.Sprintf("%019d", math.MaxInt64-t.UnixNano())
}

// DoneEntry is a done marker, decoded.
type DoneEntry struct {
	Marker     string // the marker's key: a cursor for the next page
	ID         string
	FinishedAt time.Time
}

// parseDone decodes a done marker key.
func parseDone(key string) (DoneEntry, bool) {
	i := strings.LastIndexByte(key, '/')
	inv, id, ok := strings.Cut(key[i+1:], "-")
	if !ok || !job.ValidID(id) {
		return DoneEntry{}, false
	}
	n, err := strconv.ParseInt(inv, 10, 64)
	if err != nil {
		return DoneEntry{}, false
	}
	return DoneEntry{Marker: key, ID: id, FinishedAt: time.Unix(0, math.MaxInt64-n).UTC()}, true
}

// putMarker writes an empty marker object.
func (s *Store) putMarker(ctx context.Context, key string) error {
	_, err := s.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.Bucket, Key: aws.String(key), Body: strings.NewReader("")})
	if err != nil {
		return fmt.Errorf("write index marker %s: %w", key, err)
	}
	return nil
}

func (s *Store) deleteMarker(ctx context.Context, key string) error {
	_, err := s.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.Bucket, Key: aws.String(key)})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete index marker %s: %w", key, err)
	}
	return nil
}

// markDone records that rec finished: its done marker, then no active one.
func (s *Store) markDone(ctx context.Context, rec *job.Record) error {
	if err := s.putMarker(ctx, DoneKey(rec.State, finishedAt(rec), rec.ID)); err != nil {
		return err
	}
	return s.deleteMarker(ctx, ActiveKey(rec.ID))
}

func finishedAt(rec *job.Record) time.Time {
	if rec.FinishedAt != nil {
		return *rec.FinishedAt
	}
	return rec.UpdatedAt
}

// RepairIndex makes the markers of rec agree with its state: an
// unfinished job has its active marker; a finished one its done marker and
// no active marker.
func (s *Store) RepairIndex(ctx context.Context, rec *job.Record) error {
	if rec.State.Terminal() {
		return s.markDone(ctx, rec)
	}
	return s.putMarker(ctx, ActiveKey(rec.ID))
}

// ActiveEntry is an active marker as listed.
type ActiveEntry struct {
	ID       string
	Modified time.Time // when the marker was written
}

// Active calls fn with the active markers in ID order, starting after the
// ID after (empty: from the start), until fn returns an error (ErrStop
// ends the listing without error).
func (s *Store) Active(ctx context.Context, after string, fn func(ActiveEntry) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: aws.String(ActivePrefix)}
	if after != "" {
		in.StartAfter = aws.String(ActiveKey(after))
	}
	p := s3.NewListObjectsV2Paginator(s.S3, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list active jobs: %w", err)
		}
		for _, o := range page.Contents {
			id := strings.TrimPrefix(aws.ToString(o.Key), ActivePrefix)
			if !job.ValidID(id) {
				continue
			}
			if err := fn(ActiveEntry{ID: id, Modified: aws.ToTime(o.LastModified)}); errors.Is(err, ErrStop) {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	return nil
}

// Done calls fn with the done markers of state, newest first, starting
// after the marker key after (empty: the newest), until fn returns an
// error (ErrStop ends the listing without error). pageSize bounds each
// listing request (0: the store's default).
func (s *Store) Done(ctx context.Context, state job.State, after string, pageSize int32, fn func(DoneEntry) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: aws.String(DoneStatePrefix(state))}
	if after != "" {
		in.StartAfter = aws.String(after)
	}
	if pageSize > 0 {
		in.MaxKeys = aws.Int32(pageSize)
	}
	p := s3.NewListObjectsV2Paginator(s.S3, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s jobs: %w", state, err)
		}
		for _, o := range page.Contents {
			e, ok := parseDone(aws.ToString(o.Key))
			if !ok {
				continue
			}
			if err := fn(e); errors.Is(err, ErrStop) {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	return nil
}

// DoneBefore is the done-marker cursor from which Done lists the jobs of
// state that finished before t: pass it as after.
func DoneBefore(state job.State, t time.Time) string {
	// "~" sorts after every job ID: the markers at exactly t are skipped.
	return DoneStatePrefix(state) + invTime(t.Truncate(time.Hour)) + "/" + invTime(t) + "-~"
}

// Delete removes a finished job: its record, then its done marker (a
// crash between leaves a marker whose record is gone, which readers skip
// and the next retention pass removes).
func (s *Store) Delete(ctx context.Context, rec *job.Record) error {
	if !rec.State.Terminal() {
		return fmt.Errorf("job %s is %s: only finished jobs are deleted", rec.ID, rec.State)
	}
	if _, err := s.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.Bucket, Key: aws.String(Key(rec.ID))}); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete job record %s: %w", rec.ID, err)
	}
	return s.deleteMarker(ctx, DoneKey(rec.State, finishedAt(rec), rec.ID))
}

// DeleteMarker removes a marker whose record is gone.
func (s *Store) DeleteMarker(ctx context.Context, key string) error { return s.deleteMarker(ctx, key) }
