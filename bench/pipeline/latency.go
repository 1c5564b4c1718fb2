package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// smallSize is the size of every file of the latency and throughput phases.
const smallSize = 1 << 10

// Bounds of the small jobs: failure bounds, never delays.
const (
	jobTimeout = 30 * time.Second
	pollEvery  = 2 * time.Millisecond
)

// smallContent returns 1 KiB that no other index of the run shares.
func smallContent(seed uint64, i int) []byte {
	b := make([]byte, smallSize)
	rand.NewChaCha8(chachaSeed(seed, uint64(i))).Read(b)
	return b
}

func chachaSeed(a, b uint64) (s [32]byte) {
	binary.LittleEndian.PutUint64(s[:], a)
	binary.LittleEndian.PutUint64(s[8:], b)
	return s
}

// putSmall uploads body to the input bucket and returns the job ID it
// starts and the moment the PutObject response was back.
func putSmall(ctx context.Context, c *s3.Client, key string, body []byte) (string, time.Time, error) {
	res, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	done := time.Now()
	if err != nil {
		return "", done, fmt.Errorf("put s3://%s/%s: %w", inputBucket, key, err)
	}
	return jobID(key, res.VersionId, res.ETag), done, nil
}

// jobID is the ID conveyor derives for the uploaded object version.
func jobID(key string, versionID, etag *string) string {
	return job.ID(inputBucket, key, job.Revision(aws.ToString(versionID), s3event.TrimETag(aws.ToString(etag))))
}

// errNoRecord means the job's record is not written yet.
var errNoRecord = errors.New("no job record yet")

// getRecord reads state/jobs/<id>.json.
func getRecord(ctx context.Context, c *s3.Client, id string) (*job.Record, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(stateBucket), Key: aws.String("jobs/" + id + ".json")})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, errNoRecord
	}
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, err
	}
	var rec job.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("decode record %s: %w", id, err)
	}
	return &rec, nil
}

// waitSucceeded polls the job's record every interval until it is
// terminal; seen is when the poll that saw it succeeded returned.
func waitSucceeded(ctx context.Context, up *upProc, id string, interval time.Duration) (rec *job.Record, seen time.Time, err error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rec, err = getRecord(ctx, up.s3, id)
		seen = time.Now()
		if err == nil && rec.State.Terminal() {
			if rec.State != job.Succeeded {
				return rec, seen, fmt.Errorf("job %s ended %s: %s (see its log: conveyor logs --data-dir %s %s)", id, rec.State, rec.Error, up.dataDir, id)
			}
			if rec.FinishedAt == nil {
				return rec, seen, fmt.Errorf("job %s succeeded without finished_at", id)
			}
			return rec, seen, nil
		}
		if e := up.errExited(); e != nil {
			return rec, seen, e
		}
		select {
		case <-ctx.Done():
			state := "no record"
			if rec != nil {
				state = string(rec.State)
			}
			return rec, seen, fmt.Errorf("job %s still %s (last read error: %v): %w", id, state, err, ctx.Err())
		case <-t.C:
		}
	}
}

// runLatency uploads n small files one after the other and, for each,
// waits for its job to succeed before the next upload.
func runLatency(ctx context.Context, up *upProc, n int) (*Latency, error) {
	fmt.Fprintf(progressOut, "latency: %d sequential jobs...\n", n)
	seed := uint64(time.Now().UnixNano())
	var put, created, record, observed []time.Duration
	var queued, fetch, process, upload, total []time.Duration
	for i := range n {
		key := fmt.Sprintf("bench/latency/%05d.bin", i)
		body := smallContent(seed, i)
		start := time.Now()
		id, putDone, err := putSmall(ctx, up.s3, key, body)
		if err != nil {
			return nil, err
		}
		jctx, cancel := context.WithTimeout(ctx, jobTimeout)
		rec, seen, err := waitSucceeded(jctx, up, id, pollEvery)
		cancel()
		if err != nil {
			return nil, err
		}
		put = append(put, putDone.Sub(start))
		// finished_at is conveyor's wall clock; putDone.Round(0) drops the
		// monotonic reading so both sides are wall-clock times of one machine.
		created = append(created, rec.CreatedAt.Sub(putDone.Round(0)))
		record = append(record, rec.FinishedAt.Sub(putDone.Round(0)))
		observed = append(observed, seen.Sub(putDone))
		tm := rec.Timings
		queued = append(queued, ms(tm.QueuedMS))
		fetch = append(fetch, ms(tm.FetchMS))
		process = append(process, ms(tm.ProcessMS))
		upload = append(upload, ms(tm.UploadMS))
		total = append(total, ms(tm.TotalMS))
	}
	return &Latency{
		Jobs:          n,
		Processor:     up.processor,
		Workers:       up.workers,
		PollEveryMS:   msf(pollEvery),
		PutMS:         summarize(put),
		CreatedAtMS:   summarize(created),
		FinishedAtMS:  summarize(record),
		PollSeenMS:    summarize(observed),
		RecordTimings: medianTimings(queued, fetch, process, upload, total),
		PeakRSSMB:     up.peakRSSMB(),
	}, nil
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
