package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
)

// crashUpload is one upload of TestCrashSafety and whether the server
// acknowledged it with a 200.
type crashUpload struct {
	key   string
	body  []byte
	acked bool
	id    string
	err   error
}

// TestCrashSafety: kill -9 while jobs run and uploads are in flight, start
// again on the same data dir: every acknowledged upload ends with exactly
// one succeeded job and its output; an unacknowledged one that exists does
// too.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	script := writeScript(t, t.TempDir(), "slowcopy.sh", `sleep 0.3
cp "$CONVEYOR_INPUT" "$CONVEYOR_OUTPUT_DIR/copy"
`)
	opts := upOptions{
		Config:  fmt.Sprintf("processor:\n  command: [%q]\nreconcile:\n  interval: 1s\n", script),
		DataDir: t.TempDir(),
		Port:    freePort(t),
	}
	var all []*crashUpload
	for round := 1; round <= 2; round++ {
		up := startUp(t, opts)
		verifyCrashUploads(t, up, all)
		// No SDK retries: an upload either got its 200 or it did not.
		client := s3.New(s3.Options{
			BaseEndpoint: aws.String(up.Endpoint), Region: "us-east-1", UsePathStyle: true,
			Credentials:      credentials.NewStaticCredentialsProvider(up.Creds.AccessKeyID, up.Creds.SecretAccessKey, ""),
			RetryMaxAttempts: 1,
		})

		// Wave A: uploaded and acknowledged before the crash.
		waveA := newCrashUploads(round, "a", 10, 64<<10)
		runUploads(client, waveA, nil)
		for _, u := range waveA {
			if !u.acked {
				t.Fatalf("round %d: upload %s failed before any crash: %v", round, u.key, u.err)
			}
		}
		waitAny(t, up, waveA)

		// Wave B: in flight when the process dies.
		waveB := newCrashUploads(round, "b", 10, 2<<20)
		firstAck := make(chan struct{}, len(waveB))
		done := make(chan struct{})
		go func() { runUploads(client, waveB, firstAck); close(done) }()
		select {
		case <-firstAck:
		case <-time.After(jobTimeout):
			t.Fatalf("round %d: no upload of wave B was acknowledged within %s", round, jobTimeout)
		}
		up.kill9()
		<-done
		acked := 0
		for _, u := range waveB {
			if u.acked {
				acked++
			}
		}
		t.Logf("round %d: killed -9 with %d of %d wave-B uploads acknowledged", round, acked, len(waveB))
		all = append(all, waveA...)
		all = append(all, waveB...)
	}
	up := startUp(t, opts)
	verifyCrashUploads(t, up, all)
}

func newCrashUploads(round int, wave string, n, size int) []*crashUpload {
	var us []*crashUpload
	for i := range n {
		b := make([]byte, size)
		rand.Read(b)
		us = append(us, &crashUpload{key: fmt.Sprintf("crash/r%d-%s-%02d.bin", round, wave, i), body: b})
	}
	return us
}

// runUploads puts every upload concurrently and reports each 200 on acks.
func runUploads(c *s3.Client, us []*crashUpload, acks chan<- struct{}) {
	var wg sync.WaitGroup
	for _, u := range us {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
			defer cancel()
			u.id, u.err = tryPut(ctx, c, u.key, u.body)
			u.acked = u.err == nil
			if u.acked && acks != nil {
				acks <- struct{}{}
			}
		}()
	}
	wg.Wait()
}

// waitAny waits until one of us has succeeded.
func waitAny(t *testing.T, up *upProc, us []*crashUpload) {
	t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for time.Now().Before(deadline) {
		for _, u := range us {
			if r, err := record(context.Background(), up.S3, u.id); err == nil && r != nil && r.State == job.Succeeded {
				return
			}
		}
		time.Sleep(pollEvery)
	}
	t.Fatalf("no job succeeded within %s", jobTimeout)
}

// verifyCrashUploads checks every acknowledged upload, and every
// unacknowledged one whose object exists, has exactly one succeeded record
// and the right output.
func verifyCrashUploads(t *testing.T, up *upProc, us []*crashUpload) {
	t.Helper()
	ctx := context.Background()
	var check []*crashUpload
	unackedStored := 0
	defer func() {
		if len(us) > 0 {
			t.Logf("checked %d uploads: %d acknowledged, %d unacknowledged but stored", len(check), len(check)-unackedStored, unackedStored)
		}
	}()
	for _, u := range us {
		if u.acked {
			check = append(check, u)
			continue
		}
		b, err := getObject(ctx, up.S3, inputBucket, u.key)
		switch {
		case isNotFound(err):
			continue
		case err != nil:
			t.Errorf("get unacknowledged s3://%s/%s: %v", inputBucket, u.key, err)
			continue
		case !bytes.Equal(b, u.body):
			t.Errorf("unacknowledged upload %s exists with %d bytes that are not what was sent (%d bytes)", u.key, len(b), len(u.body))
			continue
		}
		u.id = headJobID(t, up.S3, u.key)
		check = append(check, u)
		unackedStored++
	}
	for _, u := range check {
		r := waitState(t, up.S3, u.id, job.Succeeded, jobTimeout)
		out := mustGet(t, up.S3, outputBucket, u.key+"/copy")
		if !bytes.Equal(out, u.body) {
			t.Errorf("output of %s: %d bytes that differ from the %d uploaded", u.key, len(out), len(u.body))
		}
		if r.Attempt > 1 {
			t.Logf("%s succeeded at attempt %d (interrupted before)", u.key, r.Attempt)
		}
	}
	// Exactly one record per key.
	perKey := map[string][]string{}
	for _, k := range listKeys(t, up.S3, stateBucket, "jobs/") {
		id := k[len("jobs/") : len(k)-len(".json")]
		r, err := record(ctx, up.S3, id)
		if err != nil || r == nil {
			t.Errorf("record %s: %v", id, err)
			continue
		}
		perKey[r.Key] = append(perKey[r.Key], fmt.Sprintf("%s:%s", r.ID, r.State))
	}
	for _, u := range check {
		if len(perKey[u.key]) != 1 {
			t.Errorf("%s has records %v, want exactly one", u.key, perKey[u.key])
		}
	}
}
