package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// The history the benchmark writes: the shares of finished records and
// how far back they go.
const (
	// The history spans the last 28 days: within the default retention of
	// finished records (30 days), as a steady deployment keeps it. Older
	// ones would be expired by the first passes, which is work, not idling.
	historySpan     = 28 * 24 * time.Hour
	deadShare       = 0.02
	supersededShare = 0.01 // a superseded version and its successor, which succeeded
	maxUnfinished   = 300  // queued, retrying and running, in equal parts
	localOwner      = "vol-local/0f3c"
	benchOwner      = "vol-bench/p" // another volume: its running jobs' leases are live
	maxAttempts     = 3
)

// kind is what one unit of history is: one input key and its record, or
// for kindSuperseded two versions of the key and their two records.
type kind int

const (
	kindSucceeded kind = iota
	kindDead
	kindSuperseded
	kindQueued
	kindRetrying
	kindRunning
)

// unit is one input key of the history.
type unit struct {
	seq     int
	created time.Time
	kind    kind
	// withOutput: also write the output object, so that `conveyor get`
	// of this key downloads something real.
	withOutput bool
}

// records is how many job records u makes.
func (u unit) records() int {
	if u.kind == kindSuperseded {
		return 2
	}
	return 1
}

func (u unit) key() string {
	return fmt.Sprintf("batch/%s/%d.csv", u.created.UTC().Format("2006-01-02"), u.seq)
}

// plan sends the units of a history of n records, oldest first, to out,
// and closes it: finished records spread evenly over historySpan, then the
// unfinished ones in the last hour. Deterministic for a given now.
func plan(ctx context.Context, n int, now time.Time, out chan<- unit) {
	defer close(out)
	rng := rand.New(rand.NewPCG(1, 2))
	unfinished := min(maxUnfinished, n/10)
	finished := n - unfinished
	start := now.Add(-historySpan)
	step := (historySpan - time.Hour) / time.Duration(max(finished, 1))
	written, seq, output := 0, 0, false
	send := func(u unit) bool {
		select {
		case out <- u:
			seq++
			written += u.records()
			return true
		case <-ctx.Done():
			return false
		}
	}
	for written < finished {
		u := unit{seq: seq, created: start.Add(time.Duration(written) * step), kind: kindSucceeded}
		switch r := rng.Float64(); {
		case r < supersededShare && finished-written >= 2:
			u.kind = kindSuperseded
		case r < supersededShare+deadShare:
			u.kind = kindDead
		case !output:
			u.withOutput, output = true, true
		}
		if !send(u) {
			return
		}
	}
	for i := range unfinished {
		u := unit{seq: seq, created: now.Add(-time.Hour + time.Duration(i)*time.Hour/time.Duration(unfinished))}
		u.kind = []kind{kindQueued, kindRetrying, kindRunning}[i%3]
		if !send(u) {
			return
		}
	}
}

// prepStats counts what was written.
type prepStats struct {
	records, puts atomic.Int64
	byState       sync.Map // job.State -> *atomic.Int64
	getKey        atomic.Value
}

func (s *prepStats) count(st job.State) {
	v, _ := s.byState.LoadOrStore(st, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// stateCounts is the number of records written per state.
func (s *prepStats) stateCounts() map[string]int64 {
	m := map[string]int64{}
	s.byState.Range(func(k, v any) bool {
		m[string(k.(job.State))] = v.(*atomic.Int64).Load()
		return true
	})
	return m
}

// writer writes the units of one history through the S3 API.
type writer struct {
	s3    *s3.Client
	now   time.Time
	stats *prepStats
}

// prepare writes a history of n records with the given number of parallel
// writers, printing progress, and returns the key `conveyor get` is timed on.
func prepare(ctx context.Context, client *s3.Client, n, writers int, stats *prepStats) (string, error) {
	w := &writer{s3: client, now: time.Now().UTC(), stats: stats}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	units := make(chan unit, 4*writers)
	go plan(ctx, n, w.now, units)
	g, gctx := errgroup.WithContext(ctx)
	for range writers {
		g.Go(func() error {
			for u := range units {
				if err := w.write(gctx, u); err != nil {
					return fmt.Errorf("write %s: %w", u.key(), err)
				}
			}
			return nil
		})
	}
	done := make(chan struct{})
	go w.progress(n, done)
	err := g.Wait()
	close(done)
	if err != nil {
		return "", err
	}
	skey, body := sweptState(time.Now())
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(stateBucket), Key: aws.String(skey), Body: bytes.NewReader(body)}); err != nil {
		return "", fmt.Errorf("write the reconciler state: %w", err)
	}
	key, _ := stats.getKey.Load().(string)
	return key, nil
}

// progress prints the records written every 10 s until done.
func (w *writer) progress(n int, done <-chan struct{}) {
	start := time.Now()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			r := w.stats.records.Load()
			el := time.Since(start)
			rate := float64(r) / el.Seconds()
			fmt.Fprintf(progressOut, "  %d/%d records (%.0f/s, %d PUTs), about %s left\n",
				r, n, rate, w.stats.puts.Load(), (time.Duration(float64(int64(n)-r)/max(rate, 1)) * time.Second).Round(time.Second))
		}
	}
}

// write puts the unit's input object(s), records and index markers.
func (w *writer) write(ctx context.Context, u unit) error {
	key := u.key()
	body := []byte(fmt.Sprintf("id,day,value\n%d,%s,%d\n", u.seq, u.created.Format("2006-01-02"), u.seq*7919%10007))
	ver, etag, err := w.putInput(ctx, key, body)
	if err != nil {
		return err
	}
	rec := job.New(inputBucket, key, ver, etag, int64(len(body)), maxAttempts, u.created)
	rec.Dispatcher = "local"
	sum := sha256.Sum256(body)
	rec.InputSHA256 = hex.EncodeToString(sum[:])
	rec.Log = "/var/lib/conveyor/volume/logs/" + rec.ID + ".log"
	t := u.created
	switch u.kind {
	case kindSucceeded:
		if err := w.succeed(ctx, rec, t, u.withOutput); err != nil {
			return err
		}
		if u.withOutput {
			w.stats.getKey.Store(key)
		}
	case kindDead:
		for a := 1; a <= maxAttempts; a++ {
			t = t.Add(time.Duration(a) * 5 * time.Second)
			if err := rec.Claim(localOwner, token(rec.ID, a), t, 2*time.Minute, false); err != nil {
				return err
			}
			code := 1
			t = t.Add(40 * time.Millisecond)
			rec.Fail(t, &code, "exit status 1: parse row 2: unexpected field count", false, time.Duration(a)*5*time.Second)
		}
		rec.Timings = job.Timings{QueuedMS: 2, FetchMS: 1, ProcessMS: 37, TotalMS: 40}
	case kindSuperseded:
		next := append(bytes.Clone(body), "corrected\n"...)
		ver2, etag2, err := w.putInput(ctx, key, next)
		if err != nil {
			return err
		}
		if err := rec.Supersede(t.Add(30*time.Millisecond), "s3://"+inputBucket+"/"+key+" has a newer version "+ver2); err != nil {
			return err
		}
		rec2 := job.New(inputBucket, key, ver2, etag2, int64(len(next)), maxAttempts, t.Add(20*time.Millisecond))
		rec2.Dispatcher = "local"
		sum := sha256.Sum256(next)
		rec2.InputSHA256 = hex.EncodeToString(sum[:])
		rec2.Log = "/var/lib/conveyor/volume/logs/" + rec2.ID + ".log"
		if err := w.succeed(ctx, rec2, rec2.CreatedAt, false); err != nil {
			return err
		}
		if err := w.putRecord(ctx, rec2); err != nil {
			return err
		}
	case kindQueued:
	case kindRetrying:
		if err := rec.Claim(localOwner, token(rec.ID, 1), t.Add(3*time.Millisecond), 2*time.Minute, false); err != nil {
			return err
		}
		code := 75
		// Due well after the measurement: the job waits, as a retry does.
		rec.Fail(t.Add(time.Second), &code, "exit status 75: upstream service unavailable", false, w.now.Sub(t)+2*time.Hour)
	case kindRunning:
		// Held by another volume with a live lease: nothing here may take it.
		if err := rec.Claim(benchOwner, token(rec.ID, 1), w.now, 2*time.Hour, false); err != nil {
			return err
		}
	}
	return w.putRecord(ctx, rec)
}

// succeed makes rec a job that succeeded at about t with one output,
// written to the output bucket when write is set.
func (w *writer) succeed(ctx context.Context, rec *job.Record, t time.Time, write bool) error {
	if err := rec.Claim(localOwner, token(rec.ID, 1), t.Add(2*time.Millisecond), 2*time.Minute, false); err != nil {
		return err
	}
	outKey, err := job.OutputKey(rec.Key, "report.json")
	if err != nil {
		return err
	}
	report := []byte(fmt.Sprintf("{\"input\":%q,\"size\":%d,\"sha256\":%q}\n", rec.Key, rec.Size, rec.InputSHA256))
	sum := sha256.Sum256(report)
	sha := hex.EncodeToString(sum[:])
	if write {
		_, err := w.s3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(outputBucket), Key: &outKey, Body: bytes.NewReader(report),
			Metadata: map[string]string{job.MetaJob: rec.ID, job.MetaInputVersion: rec.InputVersion(), job.MetaSHA256: sha},
		})
		if err != nil {
			return fmt.Errorf("put output s3://%s/%s: %w", outputBucket, outKey, err)
		}
		w.stats.puts.Add(1)
	}
	rec.Timings = job.Timings{QueuedMS: 2, FetchMS: 1, ProcessMS: 3, UploadMS: 1, TotalMS: 5}
	rec.Succeed(t.Add(9*time.Millisecond), []job.Output{{Key: outKey, Size: int64(len(report)), SHA256: sha}})
	return nil
}

// putInput writes one version of an input object and returns its version
// ID and ETag, as the job ID is derived from them.
func (w *writer) putInput(ctx context.Context, key string, body []byte) (string, string, error) {
	out, err := w.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: &key, Body: bytes.NewReader(body)})
	if err != nil {
		return "", "", fmt.Errorf("put input: %w", err)
	}
	w.stats.puts.Add(1)
	ver := aws.ToString(out.VersionId)
	if ver == "" || ver == "null" {
		return "", "", fmt.Errorf("put input s3://%s/%s returned no version ID: is the input bucket versioned?", inputBucket, key)
	}
	return ver, s3event.TrimETag(aws.ToString(out.ETag)), nil
}

// putRecord writes rec and its index marker in the layout of layout.go.
func (w *writer) putRecord(ctx context.Context, rec *job.Record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	in := &s3.PutObjectInput{
		Bucket: aws.String(stateBucket), Key: aws.String(recordKey(rec.ID)), Body: bytes.NewReader(b),
		ContentType: aws.String("application/json"),
	}
	if rec.State.Terminal() {
		in.Tagging = aws.String(finishedTag)
	}
	if _, err := w.s3.PutObject(ctx, in); err != nil {
		return fmt.Errorf("put record %s: %w", rec.ID, err)
	}
	if _, err := w.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(stateBucket), Key: aws.String(markerKey(rec)), Body: bytes.NewReader(nil),
	}); err != nil {
		return fmt.Errorf("put index marker of %s: %w", rec.ID, err)
	}
	w.stats.puts.Add(2)
	w.stats.records.Add(1)
	w.stats.count(rec.State)
	return nil
}

// token is a claim token, fixed per job and attempt.
func token(id string, attempt int) string { return fmt.Sprintf("%s-%d", id[:16], attempt) }
