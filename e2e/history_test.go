package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
)

var (
	historyDuration = flag.Duration("history.duration", 30*time.Second, "how long TestHistory drives uploads and crashes")
	historySeed     = flag.Uint64("history.seed", 0, "seed of TestHistory's random choices (0: a new one); timing still varies")
	historyQuiet    = flag.Duration("history.quiet-timeout", 90*time.Second, "how long TestHistory waits for every job to finish after the chaos")
)

// historyKeys are the input keys TestHistory overwrites; none is a folder
// of another (the posix backend cannot hold both).
var historyKeys = []string{"hist/one.txt", "hist/sub/two.txt", "hist/sub/deep/three.dat", "four"}

const (
	historyUploaders = 3
	// historyDeathBound is how long a processor may outlive its worker:
	// well under the processor's 0-3 s of sleep, or an orphan would end
	// by itself within the bound and never be seen.
	historyDeathBound = time.Second
	historyMaxClones  = 2               // clone workers running at once
	historyQuietFor   = 3 * time.Second // no unfinished record for this long is quiet
)

// TestHistory drives random overwrites of a few keys, kill -9 and SIGTERM
// of `conveyor up`, and workers on a clone of the volume, then checks the
// job contract (docs: DESIGN.md) against the records, the processor's
// journal and the outputs. -history.duration makes a long run,
// -history.seed replays the choices of one.
func TestHistory(t *testing.T) {
	seed := *historySeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("replay with -history.seed=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	dir := t.TempDir()
	journal := filepath.Join(dir, "journal.log")
	script := writeJournalScript(t, dir, journal)
	dataDir := filepath.Join(dir, "data")
	cloneVol := filepath.Join(dir, "clone-volume")
	for _, d := range []string{dataDir, filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := historyConfig(t, script)
	opts := upOptions{Config: cfg, DataDir: dataDir, Port: freePort(t)}
	wl := &workerLog{}
	watcher := startRunWatcher(journal)
	watcherStopped := false
	defer func() {
		if !watcherStopped {
			watcher.Stop()
		}
	}()

	up := startUp(t, opts)
	upVolID := readVolumeID(t, filepath.Join(dataDir, "volume"))
	upIdx := wl.add(workerProc{Kind: "up", PID: up.PID(), VolumeID: upVolID, Start: time.Now()})
	creds := up.Creds
	// No SDK retries: an upload either got its 200 or it did not.
	client := s3.New(s3.Options{
		BaseEndpoint: aws.String(up.Endpoint), Region: "us-east-1", UsePathStyle: true,
		Credentials:      credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, ""),
		RetryMaxAttempts: 1,
	})

	// The uploaders run for the whole chaos, through restarts.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up1 := &uploadLog{}
	var uwg sync.WaitGroup
	for i := range historyUploaders {
		uwg.Add(1)
		go func() {
			defer uwg.Done()
			runUploader(ctx, client, rand.New(rand.NewPCG(seed, uint64(i)+2)), up1)
		}()
	}

	// A clone of the volume, once it has seen some work.
	waitUploads(t, up1, 2)
	if _, stderr, code := runCLI(t, "snapshot", "create", "--data-dir", dataDir, "--no-progress"); code != 0 {
		t.Fatalf("conveyor snapshot create: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := runCLI(t, "snapshot", "restore", "latest", "--to", cloneVol, "--data-dir", dataDir, "--no-progress"); code != 0 {
		t.Fatalf("conveyor snapshot restore latest --to %s: exit %d\n%s", cloneVol, code, stderr)
	}
	cloneVolID := readVolumeID(t, cloneVol)
	cloneCfg := filepath.Join(dir, "clone.yaml")
	if err := os.WriteFile(cloneCfg, []byte(fmt.Sprintf("%ss3:\n  endpoint: %s\n  access_key_id: %s\n  secret_access_key: %s\n",
		cfg, up.Endpoint, creds.AccessKeyID, creds.SecretAccessKey)), 0o600); err != nil {
		t.Fatal(err)
	}

	// The chaos, in this goroutine: startUp may fail the test.
	var clones []*cloneWorker
	stats := map[string]int{}
	deadline := time.Now().Add(*historyDuration)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
		running := clones[:0]
		for _, c := range clones {
			if c.running() {
				running = append(running, c)
			}
		}
		clones = running
		switch p := rng.IntN(100); {
		case p < 30:
			signalUp(t, up, syscall.SIGKILL, wl, upIdx)
			stats["up kill -9"]++
		case p < 45:
			signalUp(t, up, syscall.SIGTERM, wl, upIdx)
			stats["up SIGTERM"]++
		case p < 85:
			if len(clones) >= historyMaxClones {
				continue
			}
			id := pickJob(ctx, up.S3, rng)
			if id == "" {
				continue
			}
			c, err := startCloneWorker(t, cloneCfg, cloneVol, filepath.Join(dir, "logs"), id, cloneVolID, wl)
			if err != nil {
				t.Fatalf("start a clone worker: %v", err)
			}
			clones = append(clones, c)
			stats["clone worker"]++
			continue
		default:
			if len(clones) == 0 {
				continue
			}
			clones[rng.IntN(len(clones))].signal(syscall.SIGKILL, wl)
			stats["clone kill -9"]++
			continue
		}
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		up = startUp(t, opts)
		upIdx = wl.add(workerProc{Kind: "up", PID: up.PID(), VolumeID: readVolumeID(t, filepath.Join(dataDir, "volume")), Start: time.Now()})
	}
	cancel()
	uwg.Wait()
	// Clone workers get a while to finish their job, then a SIGTERM.
	for _, c := range clones {
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			c.signal(syscall.SIGTERM, wl)
			stats["clone SIGTERM at the end"]++
		}
	}
	t.Logf("chaos over after %s: %v", *historyDuration, stats)

	quiet := waitQuiet(t, up.S3, *historyQuiet)
	runs, bad := watcher.Stop()
	watcherStopped = true
	if len(bad) > 0 {
		t.Errorf("journal lines that did not parse: %q", bad)
	}
	h := &history{
		Uploads:    up1.acked(),
		Runs:       runs,
		Workers:    wl.all(),
		DeathBound: historyDeathBound,
	}
	collectState(t, up.S3, h)
	logHistorySummary(t, h, up1)
	if vs := checkHistory(h); len(vs) > 0 {
		byInv := map[int]int{}
		for _, v := range vs {
			byInv[v.Invariant]++
			t.Errorf("%s", v)
		}
		t.Errorf("%d violations (by invariant: %v); quiet: %v; replay with -history.seed=%d", len(vs), byInv, quiet, seed)
	} else if !quiet {
		t.Errorf("the pipeline was not quiet within %s; replay with -history.seed=%d", *historyQuiet, seed)
	}
}

// historyConfig is conveyor.yaml of TestHistory: the journal processor,
// many attempts, quick retries and reconciliation, and a short lease when
// this build knows the setting.
func historyConfig(t *testing.T, script string) string {
	t.Helper()
	cfg := fmt.Sprintf(`processor:
  command: [%q]
  timeout: 60s
workers: 3
retry:
  max_attempts: 20
  backoff: 500ms
  max_backoff: 2s
reconcile:
  interval: 2s
`, script)
	lease := cfg + "worker:\n  lease: 6s\n"
	if configAccepted(t, lease) {
		return lease
	}
	t.Logf("this build has no worker.lease setting; leases keep their default")
	return cfg
}

// configAccepted reports whether conveyor accepts the configuration file.
func configAccepted(t *testing.T, cfg string) bool {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "probe.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// env reads the whole configuration, then finds no credentials.
	_, stderr, _ := runCLI(t, "env", "--config", p, "--data-dir", dir)
	return !strings.Contains(stderr, "unknown setting") && !strings.Contains(stderr, "config file")
}

// uploadLog collects the uploads of every uploader.
type uploadLog struct {
	mu      sync.Mutex
	ups     []histUpload
	failed  int
	noVerID int
}

func (l *uploadLog) acked() []histUpload {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]histUpload(nil), l.ups...)
}

// runUploader overwrites random keys with random small text until ctx ends.
func runUploader(ctx context.Context, c *s3.Client, rng *rand.Rand, l *uploadLog) {
	for ctx.Err() == nil {
		key := historyKeys[rng.IntN(len(historyKeys))]
		body := make([]byte, 16+rng.IntN(200))
		for i := range body {
			body[i] = "abcdefghij klmnop\n"[rng.IntN(18)]
		}
		// Its own deadline, not ctx: an upload under way at the end runs
		// to its answer, so what was acknowledged is known.
		pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := c.PutObject(pctx, &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key), Body: bytes.NewReader(body)})
		pcancel()
		l.mu.Lock()
		if err != nil {
			l.failed++
		} else {
			v := histVersion{Key: key, VersionID: aws.ToString(out.VersionId), ETag: strings.Trim(aws.ToString(out.ETag), `"`), SHA256: sha256Hex(body)}
			if v.VersionID == "null" {
				v.VersionID = ""
			}
			if v.VersionID == "" {
				l.noVerID++
			}
			l.ups = append(l.ups, histUpload{histVersion: v, At: time.Now()})
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(500+rng.IntN(2500)) * time.Millisecond):
		}
	}
}

func waitUploads(t *testing.T, l *uploadLog, n int) {
	t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for len(l.acked()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d uploads acknowledged within %s", n, jobTimeout)
		}
		time.Sleep(pollEvery)
	}
}

// allRecords reads every job record in the state bucket.
func allRecords(ctx context.Context, c *s3.Client) (map[string]*job.Record, error) {
	recs := map[string]*job.Record{}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(stateBucket), Prefix: aws.String("jobs/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			id := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(o.Key), "jobs/"), ".json")
			r, err := record(ctx, c, id)
			if err != nil {
				return nil, err
			}
			if r != nil {
				recs[id] = r
			}
		}
	}
	return recs, nil
}

// pickJob picks an unfinished job, or any job when none is; "" when the
// state bucket cannot be read (conveyor up may be down).
func pickJob(ctx context.Context, c *s3.Client, rng *rand.Rand) string {
	recs, err := allRecords(ctx, c)
	if err != nil || len(recs) == 0 {
		return ""
	}
	var open, all []string
	for id, r := range recs {
		all = append(all, id)
		if !finished(r.State) {
			open = append(open, id)
		}
	}
	sort.Strings(open)
	sort.Strings(all)
	if len(open) > 0 {
		return open[rng.IntN(len(open))]
	}
	return all[rng.IntN(len(all))]
}

// finished reports whether no more work is due on a job in state s.
func finished(s job.State) bool { return s.Terminal() || s == stateSuperseded }

// waitQuiet waits until no record is unfinished for historyQuietFor, at
// most timeout; it reports whether that happened.
func waitQuiet(t *testing.T, c *s3.Client, timeout time.Duration) bool {
	t.Helper()
	start := time.Now()
	var quietSince time.Time
	var open []string
	for time.Since(start) < timeout {
		recs, err := allRecords(context.Background(), c)
		open = open[:0]
		for _, r := range recs {
			if !finished(r.State) {
				open = append(open, fmt.Sprintf("%s:%s", r.ID[:8], r.State))
			}
		}
		switch {
		case err != nil || len(open) > 0:
			quietSince = time.Time{}
		case quietSince.IsZero():
			quietSince = time.Now()
		case time.Since(quietSince) >= historyQuietFor:
			t.Logf("quiet %s after the chaos", time.Since(start).Round(time.Second))
			return true
		}
		time.Sleep(500 * time.Millisecond)
	}
	sort.Strings(open)
	t.Logf("not quiet within %s; unfinished: %v", timeout, open)
	return false
}

// collectState reads the records, each key's current input version and
// its outputs into h.
func collectState(t *testing.T, c *s3.Client, h *history) {
	t.Helper()
	ctx := context.Background()
	recs, err := allRecords(ctx, c)
	if err != nil {
		t.Fatalf("read the job records: %v", err)
	}
	h.Records = recs
	h.Latest = map[string]histVersion{}
	h.Outputs = map[string][]histOutput{}
	for _, key := range historyKeys {
		in, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key)})
		if isNotFound(err) {
			continue
		}
		if err != nil {
			t.Fatalf("get s3://%s/%s: %v", inputBucket, key, err)
		}
		var body bytes.Buffer
		_, err = body.ReadFrom(in.Body)
		in.Body.Close()
		if err != nil {
			t.Fatalf("read s3://%s/%s: %v", inputBucket, key, err)
		}
		v := histVersion{Key: key, VersionID: aws.ToString(in.VersionId), ETag: strings.Trim(aws.ToString(in.ETag), `"`), SHA256: sha256Hex(body.Bytes())}
		if v.VersionID == "null" {
			v.VersionID = ""
		}
		h.Latest[key] = v

		list, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(outputBucket), Prefix: aws.String(key + "/"), Delimiter: aws.String("/")})
		if err != nil {
			t.Fatalf("list s3://%s/%s/: %v", outputBucket, key, err)
		}
		for _, o := range list.Contents {
			out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(outputBucket), Key: o.Key})
			if err != nil {
				t.Fatalf("get s3://%s/%s: %v", outputBucket, aws.ToString(o.Key), err)
			}
			var b bytes.Buffer
			_, err = b.ReadFrom(out.Body)
			out.Body.Close()
			if err != nil {
				t.Fatalf("read s3://%s/%s: %v", outputBucket, aws.ToString(o.Key), err)
			}
			meta := map[string]string{}
			for k, v := range out.Metadata {
				meta[strings.ToLower(k)] = v
			}
			h.Outputs[key] = append(h.Outputs[key], histOutput{Key: aws.ToString(o.Key), Metadata: meta, Body: b.Bytes()})
		}
	}
}

// logHistorySummary says what the run did, so a passing run shows it
// exercised something.
func logHistorySummary(t *testing.T, h *history, l *uploadLog) {
	t.Helper()
	l.mu.Lock()
	failed, noVer := l.failed, l.noVerID
	l.mu.Unlock()
	states := map[job.State]int{}
	for _, r := range h.Records {
		states[r.State]++
	}
	ended := 0
	for _, r := range h.Runs {
		if !r.End.IsZero() {
			ended++
		}
	}
	deaths := map[string]int{}
	interrupted := 0
	for _, w := range h.Workers {
		if w.Death.IsZero() {
			continue
		}
		deaths[w.Kind+" "+w.How]++
		for _, r := range h.Runs {
			if r.PPID == w.PID && r.Start.Before(w.Death) && (r.until().IsZero() || r.until().After(w.stopping())) {
				interrupted++
			}
		}
	}
	t.Logf("uploads: %d acknowledged (%d without a version ID: job IDs fall back to the ETag), %d failed", len(h.Uploads), noVer, failed)
	t.Logf("records: %d %v; processor runs: %d (%d wrote their end line, %d running when their worker was stopped); worker deaths: %v",
		len(h.Records), states, len(h.Runs), ended, interrupted, deaths)
}
