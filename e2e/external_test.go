package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

// Credentials of the versitygw gateway the external-store tests start.
const (
	vgwAccess = "CONVEYOREXTERNAL"
	vgwSecret = "external-store-secret-0123456789"
)

// buildVersityGW builds the versitygw command at the version go.mod
// requires, as its own module (go install pkg@version), into a temporary
// directory; the Go build cache makes every build after the first a link.
func buildVersityGW(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	list := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/versity/versitygw")
	list.Dir = root
	out, err := list.Output()
	version := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(version, "v") {
		t.Fatalf("versitygw's version in go.mod: %q %v", version, err)
	}
	bin := t.TempDir()
	install := exec.Command("go", "install", "github.com/versity/versitygw/cmd/versitygw@"+version)
	install.Dir = bin
	install.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-buildvcs=false")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("build versitygw %s: %v\n%s", version, err, out)
	}
	return filepath.Join(bin, "versitygw")
}

// startNATSServer runs a NATS server in this test process on loopback.
func startNATSServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// gateway is a versitygw process with the posix backend.
type gateway struct {
	Endpoint string
	S3       *s3.Client
	out      *syncBuffer
	dir      string
	port     int
	// stop kills the process and waits for it.
	stop func()
}

// startGateway runs versitygw as its own process on a temporary
// directory, with versioning, and, when natsURL is set, its NATS event
// target publishing object-created events on subject. It creates the
// three buckets and turns versioning on for the input bucket.
func startGateway(t *testing.T, bin, natsURL, subject string) *gateway {
	t.Helper()
	return startGatewayAt(t, bin, t.TempDir(), freePort(t), natsURL, subject, true)
}

// startGatewayAt is startGateway on dir and port, creating the buckets
// only when create is set (a restart of the same store).
func startGatewayAt(t *testing.T, bin, dir string, port int, natsURL, subject string, create bool) *gateway {
	t.Helper()
	data, versions := filepath.Join(dir, "data"), filepath.Join(dir, "versions")
	for _, d := range []string{data, versions} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"--port", fmt.Sprintf("127.0.0.1:%d", port), "--access", vgwAccess, "--secret", vgwSecret, "--region", "us-east-1"}
	if natsURL != "" {
		// versitygw's filter file: event name -> send it.
		filter := filepath.Join(dir, "event-filter.json")
		if err := os.WriteFile(filter, []byte(`{"s3:ObjectCreated:*": true}`), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--event-nats-url", natsURL, "--event-nats-topic", subject, "--event-filter", filter)
	}
	args = append(args, "posix", "--versioning-dir", versions, data)
	g := &gateway{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), out: &syncBuffer{}, dir: dir, port: port}
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = g.out, g.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	g.stop = func() {
		cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", g.out)
		}
	})
	g.S3 = s3server.NewClient(g.Endpoint, vgwAccess, vgwSecret, "us-east-1")
	ctx := context.Background()
	deadline := time.Now().Add(readyTimeout)
	for {
		_, err := g.S3.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("versitygw exited: %s", g.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw not serving within %s: %v\n%s", readyTimeout, err, g.out)
		}
		time.Sleep(pollEvery)
	}
	if !create {
		return g
	}
	for _, b := range []string{inputBucket, outputBucket, stateBucket} {
		if _, err := g.S3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			t.Fatalf("create bucket %s on versitygw: %v", b, err)
		}
	}
	if _, err := g.S3.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(inputBucket),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatalf("enable versioning on versitygw: %v", err)
	}
	return g
}

// externalConfig is a conveyor.yaml for `conveyor up` on the gateway.
func externalConfig(g *gateway, extra string) string {
	return fmt.Sprintf(`s3:
  endpoint: %s
  access_key_id: %s
  secret_access_key: %s
workers: 2
dashboard: {addr: "off"}
reconcile: {interval: 1s}
%s`, g.Endpoint, vgwAccess, vgwSecret, extra)
}

// startUpExternal starts `conveyor up` with cfg (an external store) on
// dataDir and waits for "conveyor is up"; S3 is the gateway's client.
// Shut down like startUp's processes.
func startUpExternal(t *testing.T, g *gateway, dataDir, cfg string, env ...string) *upProc {
	t.Helper()
	p := &upProc{t: t, DataDir: dataDir, Endpoint: g.Endpoint, Addr: "(external)", S3: g.S3,
		stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "conveyor.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.launch([]string{"up", "--data-dir", dataDir, "--config", path}, env)
	if _, err := os.Stat(filepath.Join(dataDir, "credentials.json")); err == nil {
		t.Error("conveyor up on an external store wrote credentials.json: it has no server to protect")
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "s3")); len(entries) > 0 {
		t.Error("conveyor up on an external store created buckets of its own under <data>/s3")
	}
	return p
}

// waitLog waits until the process's stderr contains s.
func waitLog(t *testing.T, p *upProc, s string) {
	t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("conveyor up never logged %q; stderr:\n%s", s, p.stderr)
		}
		time.Sleep(pollEvery)
	}
}

// putVersion uploads body and returns the job ID, the version and the ETag.
func putVersion(t *testing.T, c *s3.Client, key string, body []byte) (id, version, etag string) {
	t.Helper()
	out, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("put s3://%s/%q: %v", inputBucket, key, err)
	}
	version, etag = aws.ToString(out.VersionId), aws.ToString(out.ETag)
	if version == "" {
		t.Fatalf("put %q: no version ID: the input bucket is not versioned", key)
	}
	return jobID(key, version, etag), version, etag
}

// A versitygw gateway in its own process publishes its events to NATS;
// `conveyor up` on it processes uploads announced there, overwrites as new
// versions, uploads made while it was not running (their events reached
// no one) through the reconciler, and ignores the other buckets' events.
func TestExternalStoreNATS(t *testing.T) {
	bin := buildVersityGW(t)
	ns := startNATSServer(t)
	const subject = "store.events"

	// The test listens too: the events versitygw really sends must parse.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	seen := make(chan []byte, 1000)
	var logOnce sync.Once
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if bytes.Contains(m.Data, []byte("Records")) {
			logOnce.Do(func() { t.Logf("versitygw's first event: %s", m.Data) })
		}
		seen <- m.Data
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()

	g := startGateway(t, bin, ns.ClientURL(), subject)

	// Uploaded before conveyor up runs: the event is published to no
	// subscriber of Conveyor's, so only the reconciler can find it.
	early := []byte("uploaded while conveyor was not running\n")
	earlyID, earlyVersion, _ := putVersion(t, g.S3, "early/first.txt", early)
	// versitygw's events carry no version ID, even in a versioned bucket:
	// Conveyor looks it up, so the job is the one the sweep would make.
	if ev := waitEvent(t, seen, "early/first.txt"); ev.VersionID != "" || ev.Bucket != inputBucket || ev.ETag != md5ETag(early) {
		t.Errorf("versitygw's event parsed as %+v, want s3://%s, ETag %s, no version (version %s)", ev, inputBucket, md5ETag(early), earlyVersion)
	}

	dataDir := t.TempDir()
	up := startUpExternal(t, g, dataDir, externalConfig(g, fmt.Sprintf("notifications:\n  nats: {url: %q, subject: %q}\n", ns.ClientURL(), subject)))
	if !strings.Contains(up.stdout.String(), g.Endpoint) || !strings.Contains(up.stdout.String(), "Notifications from NATS subject: "+subject) {
		t.Errorf("banner does not name the store and the subject:\n%s", up.stdout)
	}
	r := waitState(t, g.S3, earlyID, job.Succeeded, jobTimeout)
	checkReport(t, g.S3, r, early)

	// Announced by an event: a key whose path encoding matters.
	key := "dir/a b+c%.txt"
	v1 := []byte("first version\n")
	id1, _, _ := putVersion(t, g.S3, key, v1)
	if ev := waitEvent(t, seen, key); ev.Key != key {
		t.Errorf("event key %q, want %q", ev.Key, key)
	}
	r1 := waitState(t, g.S3, id1, job.Succeeded, jobTimeout)
	checkReport(t, g.S3, r1, v1)

	// An overwrite is a new version, a new job; the outputs follow it.
	v2 := []byte("second version, longer\nwith two lines\n")
	id2, version2, _ := putVersion(t, g.S3, key, v2)
	if id2 == id1 {
		t.Fatal("the overwrite got the first version's job ID")
	}
	r2 := waitState(t, g.S3, id2, job.Succeeded, jobTimeout)
	if r2.VersionID != version2 {
		t.Errorf("job of the overwrite read version %q, want %q", r2.VersionID, version2)
	}
	checkReport(t, g.S3, r2, v2)

	// A multipart upload, announced by versitygw's CompleteMultipartUpload
	// event: one job, of the whole object.
	mpKey := "multipart/big file.bin"
	mpBody := append(bytes.Repeat([]byte{'m'}, 5<<20), []byte("end")...)
	mpID := multipartPut(t, g.S3, mpKey, mpBody[:5<<20], mpBody[5<<20:])
	if ev := waitEvent(t, seen, mpKey); ev.EventName != "ObjectCreated:CompleteMultipartUpload" {
		t.Errorf("versitygw's multipart event is %q", ev.EventName)
	}
	rmp := waitState(t, g.S3, mpID, job.Succeeded, jobTimeout)
	checkReport(t, g.S3, rmp, mpBody)

	// The store announces the state and output buckets too: said once each.
	waitLog(t, up, fmt.Sprintf("ignoring events of bucket %q", stateBucket))
	if n := strings.Count(up.stderr.String(), fmt.Sprintf("ignoring events of bucket %q", stateBucket)); n != 1 {
		t.Errorf("the state bucket's events were reported %d times, want once", n)
	}

	// Stopped, then an upload: on restart the sweep finds it.
	up.stop()
	late := []byte("uploaded while conveyor was stopped\n")
	lateID, _, _ := putVersion(t, g.S3, "late.txt", late)
	startUpExternal(t, g, dataDir, externalConfig(g, fmt.Sprintf("notifications:\n  nats: {url: %q, subject: %q}\n", ns.ClientURL(), subject)))
	checkReport(t, g.S3, waitState(t, g.S3, lateID, job.Succeeded, jobTimeout), late)

	// Each version was processed once: one attempt each, and no other job
	// (an event keyed otherwise than the sweep would make a second one).
	for _, id := range []string{earlyID, id1, id2, mpID, lateID} {
		rec, err := record(context.Background(), g.S3, id)
		if err != nil || rec == nil || rec.Attempt != 1 {
			t.Errorf("job %s: %+v %v, want one attempt", id, rec, err)
		}
	}
	if recs := listKeys(t, g.S3, stateBucket, "jobs/"); len(recs) != 5 {
		t.Errorf("%d job records for 5 uploaded versions: %v", len(recs), recs)
	}
}

// multipartPut uploads parts as one multipart object and returns its job ID.
func multipartPut(t *testing.T, c *s3.Client, key string, parts ...[]byte) string {
	t.Helper()
	ctx := context.Background()
	mu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(inputBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	var done []types.CompletedPart
	for i, body := range parts {
		p, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(inputBucket), Key: aws.String(key), UploadId: mu.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(body)})
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, types.CompletedPart{ETag: p.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	out, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(inputBucket), Key: aws.String(key), UploadId: mu.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.VersionId) == "" {
		// Some stores leave it out of the response: HEAD has it.
		return headJobID(t, c, key)
	}
	return jobID(key, aws.ToString(out.VersionId), aws.ToString(out.ETag))
}

// waitEvent waits for versitygw's event about key on the test's own
// subscription and returns it parsed.
func waitEvent(t *testing.T, seen <-chan []byte, key string) s3event.ObjectCreated {
	t.Helper()
	timeout := time.After(jobTimeout)
	for {
		select {
		case b := <-seen:
			objs, _, err := s3event.Parse(b)
			if err != nil {
				continue // versitygw's s3:TestEvent at its start
			}
			for _, o := range objs {
				if o.Key == key {
					return o
				}
			}
		case <-timeout:
			t.Fatalf("versitygw published no event for %q", key)
		}
	}
}

// minioEvent is MinIO's webhook body (the real sample in s3event's
// testdata) rewritten for an object: key form-encoded as MinIO does,
// slashes included.
func minioEvent(t *testing.T, bucket, key, version, etag string, size int) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "internal", "s3event", "testdata", "minio-webhook.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["Key"] = bucket + "/" + key
	rec := doc["Records"].([]any)[0].(map[string]any)
	s3m := rec["s3"].(map[string]any)
	s3m["bucket"].(map[string]any)["name"] = bucket
	s3m["bucket"].(map[string]any)["arn"] = "arn:aws:s3:::" + bucket
	obj := s3m["object"].(map[string]any)
	obj["key"] = url.QueryEscape(key)
	obj["versionId"] = version
	if version == "" {
		delete(obj, "versionId") // as MinIO sends it for an unversioned bucket
	}
	obj["eTag"] = s3event.TrimETag(etag)
	obj["size"] = size
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func postEvent(t *testing.T, endpoint, auth string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The webhook takes MinIO-shaped POSTs carrying the secret and nothing
// else: a wrong or missing secret is 401 and starts no job, a huge body
// 413, a malformed one 400; other buckets' events are ignored.
func TestExternalStoreWebhook(t *testing.T) {
	bin := buildVersityGW(t)
	g := startGateway(t, bin, "", "") // no event target: the test posts MinIO's events
	const secret = "webhook-secret-9f8e7d6c5b4a3210"
	port := freePort(t)
	hook := fmt.Sprintf("http://127.0.0.1:%d/s3/events", port)

	// A missing bucket is refused with what to do; an unversioned input
	// bucket is taken with a warning saying what is lost.
	dataDir := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "conveyor.yaml")
	if err := os.WriteFile(cfgPath, []byte(externalConfig(g, "buckets: {output: missing}\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "up", "--data-dir", dataDir, "--config", cfgPath)
	if code == 0 || !strings.Contains(stderr, `bucket "missing" (buckets.output) does not exist at `+g.Endpoint+": create it") {
		t.Errorf("up with a missing bucket: exit %d, stderr:\n%s", code, stderr)
	}
	if _, err := g.S3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("plain")}); err != nil {
		t.Fatal(err)
	}
	plain := startUpExternal(t, g, dataDir, externalConfig(g, "buckets: {input: plain}\n"))
	waitLog(t, plain, `input bucket "plain" at `+g.Endpoint+" is not versioned")
	waitLog(t, plain, "no bucket notifications configured")
	plain.stop()

	// Swept at start: once its job is done, the first sweep has listed
	// the bucket, so later uploads come only through the webhook.
	marker := []byte("marker\n")
	markerID, _, _ := putVersion(t, g.S3, "marker.txt", marker)
	up := startUpExternal(t, g, t.TempDir(),
		externalConfig(g, fmt.Sprintf("notifications:\n  webhook: {enabled: true, addr: \"127.0.0.1:%d\"}\n", port)),
		"CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET="+secret)
	if !strings.Contains(up.stdout.String(), hook) {
		t.Errorf("banner does not give the webhook URL %s:\n%s", hook, up.stdout)
	}
	waitState(t, g.S3, markerID, job.Succeeded, jobTimeout)
	// That sweep was complete (not resumed at a later pass), so nothing
	// uploaded from here on is found by the reconciler for hours.
	waitLog(t, up, "swept 1 input versions, 1 without a job")
	for _, line := range strings.Split(up.stderr.String(), "\n") {
		if strings.Contains(line, "swept 1 input versions") && strings.Contains(line, "stopped at its budget") {
			t.Fatalf("the first sweep stopped at its budget; the test cannot tell webhook jobs from swept ones: %s", line)
		}
	}

	refused := []byte("announced without the secret\n")
	refusedID, rv, re := putVersion(t, g.S3, "refused/one.txt", refused)
	refusedEvent := minioEvent(t, inputBucket, "refused/one.txt", rv, re, len(refused))
	for _, auth := range []string{"", "Bearer wrong-secret-0000000000", secret, "Bearer " + secret + "x"} {
		if status, body := postEvent(t, hook, auth, refusedEvent); status != http.StatusUnauthorized {
			t.Errorf("POST with Authorization %q: %d %s, want 401", auth, status, body)
		}
	}
	if status, body := postEvent(t, hook, "Bearer "+secret, bytes.Repeat([]byte("x"), 2<<20)); status != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body: %d %s, want 413", status, body)
	}
	if status, body := postEvent(t, hook, "Bearer "+secret, []byte(`{"Records": [`)); status != http.StatusBadRequest || !strings.Contains(body, "Records") {
		t.Errorf("malformed body: %d %s, want 400 saying what to send", status, body)
	}

	// MinIO-shaped, with the secret: a job, once, even when posted twice.
	key := "in/report 1+2.txt"
	body := []byte("announced by a MinIO-shaped webhook\n")
	id, v, e := putVersion(t, g.S3, key, body)
	ev := minioEvent(t, inputBucket, key, v, e, len(body))
	for i := 0; i < 2; i++ {
		if status, resp := postEvent(t, hook, "Bearer "+secret, ev); status != http.StatusOK {
			t.Fatalf("POST with the secret: %d %s", status, resp)
		}
	}
	r := waitState(t, g.S3, id, job.Succeeded, jobTimeout)
	checkReport(t, g.S3, r, body)
	if r.Attempt != 1 {
		t.Errorf("job %s ran %d attempts, want 1", id, r.Attempt)
	}

	// Events that name no version (as MinIO's do for an unversioned
	// bucket) are matched to theirs, even after an overwrite: the first
	// upload's event, posted after the second upload, is the first's job.
	vkey := "versions/k.txt"
	old, newer := []byte("old content\n"), []byte("newer content, longer\n")
	oldID, _, oldETag := putVersion(t, g.S3, vkey, old)
	newID, _, newETag := putVersion(t, g.S3, vkey, newer)
	for _, e := range []struct {
		etag string
		size int
	}{{oldETag, len(old)}, {newETag, len(newer)}} {
		if status, resp := postEvent(t, hook, "Bearer "+secret, minioEvent(t, inputBucket, vkey, "", e.etag, e.size)); status != http.StatusOK {
			t.Fatalf("POST without a version: %d %s", status, resp)
		}
	}
	if r := waitRecord(t, g.S3, oldID, jobTimeout, "finished", func(r *job.Record) bool { return r.State.Terminal() }); r.State != job.Succeeded && r.State != job.Superseded {
		t.Errorf("job of the overwritten version ended %s", r.State)
	}
	checkReport(t, g.S3, waitState(t, g.S3, newID, job.Succeeded, jobTimeout), newer)
	if recs := listKeys(t, g.S3, stateBucket, "jobs/"); len(recs) != 4 { // marker, the MinIO put, two versions
		t.Errorf("%d job records, want 4 (one per version announced): %v", len(recs), recs)
	}

	// An event of another bucket is taken (200) and ignored, with a line.
	if status, resp := postEvent(t, hook, "Bearer "+secret, minioEvent(t, "elsewhere", "x.txt", "1", e, 1)); status != http.StatusOK {
		t.Fatalf("POST for another bucket: %d %s", status, resp)
	}
	waitLog(t, up, `ignoring events of bucket "elsewhere"`)

	// The refused announcement started nothing: the accepted ones, posted
	// after it, are done, and the reconciler does not sweep again for hours.
	if rec, err := record(context.Background(), g.S3, refusedID); err != nil || rec != nil {
		t.Errorf("an event posted without the secret led to a job record: %+v %v", rec, err)
	}
	if !strings.Contains(up.stderr.String(), "refused a webhook POST") {
		t.Errorf("the refused POSTs were not logged:\n%s", up.stderr)
	}
}

// TestExternalStoreEmbeddedNATS: the whole picture on one
// machine without the embedded S3 server. `conveyor up --nats embedded`
// on a versitygw store of its own, the store's NATS event target pointed
// at the NATS server `up` runs (notifications.nats.url: cluster), with the
// credentials `up` generated. The store is restarted with its event target
// once `up` (and so its NATS server) runs, as an operator would wire it.
func TestExternalStoreEmbeddedNATS(t *testing.T) {
	bin := buildVersityGW(t)
	g := startGateway(t, bin, "", "")
	const subject = "store.events"
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dataDir := t.TempDir()
	up := startUpExternal(t, g, dataDir, externalConfig(g, fmt.Sprintf(
		"cluster: {nats: embedded, nats_addr: %q}\nnotifications:\n  nats: {url: cluster, subject: %q}\n", natsAddr, subject)))
	// The banner follows its first line, which startUpExternal waited for.
	for deadline := time.Now().Add(readyTimeout); !strings.Contains(up.stdout.String(), "conveyor worker serve --nats nats://"+natsAddr); {
		if time.Now().After(deadline) {
			t.Fatalf("banner does not tell workers to use the NATS server at %s:\n%s", natsAddr, up.stdout)
		}
		time.Sleep(pollEvery)
	}
	waitLog(t, up, "subscribed to NATS subject "+subject)

	// The store publishes with the user `up` generated for its server.
	b, err := os.ReadFile(filepath.Join(dataDir, "nats-credentials.json"))
	if err != nil {
		t.Fatalf("up --nats embedded wrote no credentials: %v", err)
	}
	var creds struct{ User, Password string }
	if err := json.Unmarshal(b, &creds); err != nil || creds.User == "" || creds.Password == "" {
		t.Fatalf("nats-credentials.json = %s (%v), want a user and a password", b, err)
	}
	u := url.URL{Scheme: "nats", Host: natsAddr, User: url.UserPassword(creds.User, creds.Password)}
	g.stop()
	g = startGatewayAt(t, bin, g.dir, g.port, u.String(), subject, false)

	// The start-up sweep is long past: these jobs come from the events.
	v1, v2 := []byte("first, announced through up's own NATS\n"), []byte("second version\n")
	id1, _, _ := putVersion(t, g.S3, "embedded/nats.txt", v1)
	checkReport(t, g.S3, waitState(t, g.S3, id1, job.Succeeded, jobTimeout), v1)
	id2, _, _ := putVersion(t, g.S3, "embedded/nats.txt", v2)
	if id2 == id1 {
		t.Fatalf("the overwrite has the first version's job ID %s", id1)
	}
	checkReport(t, g.S3, waitState(t, g.S3, id2, job.Succeeded, jobTimeout), v2)
}
