package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Bounds and pace of the throughput phase.
const (
	throughputTimeout = 15 * time.Minute
	// sweepEvery paces the completion checks. Each sweep reads records in
	// upload order and stops at the first unfinished one, so it costs about
	// as many GETs as jobs finished since the last sweep: the check barely
	// loads the machine it measures. The end time itself comes from the
	// records' finished_at, not from when a sweep noticed.
	sweepEvery = 100 * time.Millisecond
)

// uploaded is one upload of the throughput phase.
type uploaded struct {
	id      string
	putDone time.Time
}

// runThroughput uploads n small files with c concurrent uploaders, then
// waits until every job has succeeded.
func runThroughput(ctx context.Context, up *upProc, n, c int) (*Throughput, error) {
	fmt.Fprintf(progressOut, "throughput: %d jobs, %d uploaders...\n", n, c)
	ctx, cancel := context.WithTimeout(ctx, throughputTimeout)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	bodies := make([][]byte, n) // generated before the clock starts
	for i := range bodies {
		bodies[i] = smallContent(seed, i)
	}

	var (
		mu    sync.Mutex
		order []uploaded // in the order the PUTs returned
		first error
	)
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, done, err := putSmall(ctx, up.s3, fmt.Sprintf("bench/throughput/%05d.bin", i), bodies[i])
				mu.Lock()
				if err != nil && first == nil {
					first = err
					cancel()
				}
				if err == nil {
					order = append(order, uploaded{id, done})
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	uploadsDone := time.Now()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	recs, seenAll, err := waitAll(ctx, up, order)
	if err != nil {
		return nil, err
	}
	var lastFinish time.Time
	lat := make([]time.Duration, len(order))
	for i, r := range recs {
		if r.FinishedAt.After(lastFinish) {
			lastFinish = *r.FinishedAt
		}
		lat[i] = r.FinishedAt.Sub(order[i].putDone.Round(0))
	}
	endToEnd := lastFinish.Sub(start.Round(0))
	upl := uploadsDone.Sub(start)
	return &Throughput{
		Jobs:            n,
		Concurrency:     c,
		Processor:       up.processor,
		Workers:         up.workers,
		UploadSeconds:   upl.Seconds(),
		UploadsPerSec:   float64(n) / upl.Seconds(),
		EndToEndSeconds: endToEnd.Seconds(),
		JobsPerSec:      float64(n) / endToEnd.Seconds(),
		PollSeenSeconds: seenAll.Sub(start).Seconds(),
		JobLatencyMS:    summarize(lat),
		PeakRSSMB:       up.peakRSSMB(),
	}, nil
}

// waitAll sweeps the records until every job has succeeded; it returns the
// records in the order of jobs and when the last one was seen.
func waitAll(ctx context.Context, up *upProc, jobs []uploaded) ([]*job.Record, time.Time, error) {
	recs := make([]*job.Record, len(jobs))
	done := 0
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		for done < len(jobs) {
			rec, err := getRecord(ctx, up.s3, jobs[done].id)
			if err != nil || !rec.State.Terminal() {
				break
			}
			if rec.State != job.Succeeded || rec.FinishedAt == nil {
				return nil, time.Time{}, fmt.Errorf("job %s ended %s: %s", rec.ID, rec.State, rec.Error)
			}
			recs[done] = rec
			done++
		}
		if done == len(jobs) {
			return recs, time.Now(), nil
		}
		if err := up.errExited(); err != nil {
			return nil, time.Time{}, err
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, fmt.Errorf("%d of %d jobs finished when the wait ended: %w", done, len(jobs), ctx.Err())
		case <-t.C:
		}
	}
}
