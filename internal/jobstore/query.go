package jobstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Query selects jobs through the index: its cost follows the jobs in
// flight plus the size of the answer, never the history.
type Query struct {
	// States keeps jobs in these states; empty keeps all.
	States []job.State
	// Skip leaves out the newest Skip jobs of each finished state (paging).
	Skip int
	// Limit returns at most this many; 0 returns every job kept.
	Limit int
}

func (q Query) wants(s job.State) bool {
	if len(q.States) == 0 {
		return true
	}
	for _, w := range q.States {
		if w == s {
			return true
		}
	}
	return false
}

// Recent returns the jobs q selects, most recently changed first: every
// unfinished one it wants (read through the active markers) and the newest
// finished ones of each state it wants (through the done markers).
func (s *Store) Recent(ctx context.Context, q Query) ([]*job.Record, error) {
	var ids []string
	if q.wants(job.Queued) || q.wants(job.Running) || q.wants(job.Retrying) {
		if err := s.Active(ctx, "", func(e ActiveEntry) error { ids = append(ids, e.ID); return nil }); err != nil {
			return nil, err
		}
	}
	for _, st := range []job.State{job.Succeeded, job.Dead, job.Superseded} {
		if !q.wants(st) {
			continue
		}
		skip := q.Skip
		var page int32
		if q.Limit > 0 {
			page = int32(min(q.Limit+skip, 1000))
		}
		n := 0
		err := s.Done(ctx, st, "", page, func(e DoneEntry) error {
			if skip > 0 {
				skip--
				return nil
			}
			ids = append(ids, e.ID)
			if n++; q.Limit > 0 && n >= q.Limit {
				return ErrStop
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	recs, err := s.GetMany(ctx, ids)
	if err != nil {
		return nil, err
	}
	var out []*job.Record
	for _, r := range recs {
		if q.wants(r.State) { // a marker may lag its record (a retry, a crash)
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].UpdatedAt.Equal(out[j].UpdatedAt) {
			return out[i].UpdatedAt.After(out[j].UpdatedAt)
		}
		return out[i].ID < out[j].ID
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// GetMany reads the records of ids, eight at a time, skipping those that
// are gone; the result is in no particular order.
func (s *Store) GetMany(ctx context.Context, ids []string) ([]*job.Record, error) {
	seen := map[string]bool{}
	ch := make(chan string)
	var (
		mu   sync.Mutex
		out  []*job.Record
		errs []error
		wg   sync.WaitGroup
	)
	for i := 0; i < min(8, len(ids)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ch {
				r, _, err := s.Get(ctx, id)
				mu.Lock()
				switch {
				case errors.Is(err, ErrNotFound):
				case err != nil:
					errs = append(errs, err)
				default:
					out = append(out, r)
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			ch <- id
		}
	}
	close(ch)
	wg.Wait()
	return out, errors.Join(errs...)
}

// WithIDPrefix returns up to limit job IDs that start with prefix: one
// listing of the records under that prefix.
func (s *Store) WithIDPrefix(ctx context.Context, prefix string, limit int32) ([]string, error) {
	out, err := s.S3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: aws.String(Prefix + prefix), MaxKeys: aws.Int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list job records: %w", err)
	}
	var ids []string
	for _, o := range out.Contents {
		id := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(o.Key), Prefix), ".json")
		if job.ValidID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
