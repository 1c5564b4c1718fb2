package lambda_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/lambda"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// bundle is what a test needs besides the handler.
type bundle struct {
	srv   *s3test.Server
	input string
	store *jobstore.Store
	disp  *dispatchtest.Recorder // named as the Lambda's dispatcher, "ssm"
	logs  *syncBuffer
}

func setup(t *testing.T, cfg orchestrator.Config) (*lambda.Handler, bundle) {
	t.Helper()
	srv := s3test.Start(t)
	b := bundle{srv: srv, input: srv.Bucket(t, "input"), disp: &dispatchtest.Recorder{Driver: "ssm"}, logs: &syncBuffer{}}
	b.store = jobstore.New(srv.Client, srv.Bucket(t, "state"))
	cfg.InputBucket = b.input
	o, err := orchestrator.New(cfg, srv.Client, b.store, b.disp)
	if err != nil {
		t.Fatal(err)
	}
	return lambda.New(o, b.logs), b
}

// put uploads body and returns the object as its event announces it.
func (b bundle) put(t *testing.T, key, body string) s3event.ObjectCreated {
	t.Helper()
	out, err := b.srv.Client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(b.input), Key: aws.String(key), Body: strings.NewReader(body),
	})
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return s3event.ObjectCreated{
		EventName: "ObjectCreated:Put", Bucket: b.input, Key: key, Size: int64(len(body)),
		ETag: s3event.TrimETag(aws.ToString(out.ETag)), VersionID: aws.ToString(out.VersionId),
	}
}

// jobID is the job the orchestrator derives from oc.
func jobID(oc s3event.ObjectCreated) string {
	return job.ID(oc.Bucket, oc.Key, job.Revision(oc.VersionID, oc.ETag))
}

// notification is the S3 event JSON for objs.
func notification(t testing.TB, objs ...s3event.ObjectCreated) json.RawMessage {
	t.Helper()
	n := s3event.Notification{}
	for _, oc := range objs {
		n.Records = append(n.Records, s3event.NewRecord("us-east-1", oc))
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logLines decodes the handler's JSON log lines.
func (b bundle) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// outcomes lists the "outcome" of each log line that has one.
func (b bundle) outcomes(t *testing.T) []string {
	var out []string
	for _, m := range b.logLines(t) {
		if o, ok := m["outcome"].(string); ok {
			out = append(out, o)
		}
	}
	return out
}

// mustRecord reads a job record and fails the test when it is missing.
func (b bundle) mustRecord(t *testing.T, id string) *job.Record {
	t.Helper()
	rec, _, err := b.store.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return rec
}

func TestSingleRecord(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	oc := b.put(t, "in/report.txt", "hello\n")
	resp, err := h.Handle(context.Background(), notification(t, oc))
	if err != nil {
		t.Fatal(err)
	}
	id := jobID(oc)
	want := lambda.Response{Created: 1, Records: []lambda.RecordResult{{Outcome: "created", JobID: id, Bucket: b.input, Key: oc.Key}}}
	if diff := cmp.Diff(want, resp); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{id}, b.disp.Dispatched()); diff != "" {
		t.Errorf("dispatched (-want +got):\n%s", diff)
	}
	rec := b.mustRecord(t, id)
	if rec.State != job.Queued || rec.Key != oc.Key || rec.Size != 6 || rec.CommandID != "cmd-1" || rec.Dispatcher != "ssm" {
		t.Errorf("record: state %s key %q size %d command %q dispatcher %q", rec.State, rec.Key, rec.Size, rec.CommandID, rec.Dispatcher)
	}
	lines := b.logLines(t)
	if len(lines) != 1 || lines[0]["outcome"] != "created" || lines[0]["job_id"] != id || lines[0]["key"] != oc.Key {
		t.Errorf("log lines %v, want one created line for job %s", lines, id)
	}

	// The same event again (S3 delivers at least once) starts nothing.
	resp, err = h.Handle(context.Background(), notification(t, oc))
	if err != nil || resp.Duplicate != 1 || len(b.disp.Dispatched()) != 1 {
		t.Errorf("second delivery: %+v, %v; dispatched %v", resp, err, b.disp.Dispatched())
	}
}

func TestManyRecords(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{Suffixes: []string{".txt"}})
	var objs []s3event.ObjectCreated
	var want []string
	for i := range 40 {
		key := fmt.Sprintf("batch/%02d.txt", i)
		if i%10 == 9 {
			key = fmt.Sprintf("batch/%02d.tmp", i) // filtered out
		}
		oc := b.put(t, key, strings.Repeat("x", i+1))
		objs = append(objs, oc)
		if strings.HasSuffix(key, ".txt") {
			want = append(want, jobID(oc))
		}
	}
	resp, err := h.Handle(context.Background(), notification(t, objs...))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Created != 36 || resp.Filtered != 4 || len(resp.Records) != 40 {
		t.Errorf("created %d filtered %d records %d, want 36 4 40", resp.Created, resp.Filtered, len(resp.Records))
	}
	if diff := cmp.Diff(want, b.disp.Dispatched()); diff != "" {
		t.Errorf("dispatched, in event order (-want +got):\n%s", diff)
	}
	for _, id := range want {
		b.mustRecord(t, id)
	}
	if n := len(b.outcomes(t)); n != 40 {
		t.Errorf("%d log lines with an outcome, want one per record (40)", n)
	}
}

func TestMultipartSizeFromHead(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	ctx := context.Background()
	c := b.srv.Client
	key := "big/multi part.bin"
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &b.input, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	part1 := bytes.Repeat([]byte("a"), 5<<20)
	var parts []types.CompletedPart
	for i, body := range [][]byte{part1, []byte("tail")} {
		p, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &b.input, Key: &key, UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(body)})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, types.CompletedPart{ETag: p.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	done, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &b.input, Key: &key, UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		t.Fatal(err)
	}
	// What the embedded server emits for a multipart upload: size 0.
	oc := s3event.ObjectCreated{EventName: "ObjectCreated:CompleteMultipartUpload", Bucket: b.input, Key: key, ETag: s3event.TrimETag(aws.ToString(done.ETag))}
	resp, err := h.Handle(ctx, notification(t, oc))
	if err != nil || resp.Created != 1 {
		t.Fatalf("handle: %+v, %v", resp, err)
	}
	rec := b.mustRecord(t, jobID(oc))
	if want := int64(len(part1) + 4); rec.Size != want {
		t.Errorf("record size %d, want %d from HEAD", rec.Size, want)
	}
}

func TestEncodedKeys(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	keys := []string{
		"with space/and+plus.txt",
		"unicode/日本語 ファイル.txt",
		"unicode/Ünïcödé – dash.csv",
		"odd/100% & a=b ?#.txt",
		"odd/'quote\" `tick` $(x).txt",
	}
	var objs []s3event.ObjectCreated
	for _, k := range keys {
		objs = append(objs, b.put(t, k, k))
	}
	body := notification(t, objs...)
	// S3 form-encodes keys: a space is '+', a '+' is %2B.
	if !bytes.Contains(body, []byte(`"with+space/and%2Bplus.txt"`)) {
		t.Fatalf("fixture does not encode keys as S3 does: %s", body)
	}
	resp, err := h.Handle(context.Background(), body)
	if err != nil || resp.Created != len(keys) {
		t.Fatalf("handle: %+v, %v", resp, err)
	}
	for i, oc := range objs {
		if got := resp.Records[i].Key; got != keys[i] {
			t.Errorf("record %d key %q, want %q", i, got, keys[i])
		}
		if rec := b.mustRecord(t, jobID(oc)); rec.Key != keys[i] {
			t.Errorf("job record key %q, want %q", rec.Key, keys[i])
		}
	}
}

func TestTestEventIgnored(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	ev := `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-01T00:00:00.000Z","Bucket":"` + b.input + `","RequestId":"X","HostId":"Y"}`
	resp, err := h.Handle(context.Background(), json.RawMessage(ev))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Ignored == "" || len(resp.Records) != 0 || len(b.disp.Dispatched()) != 0 {
		t.Errorf("test event: %+v, dispatched %v; want ignored, nothing dispatched", resp, b.disp.Dispatched())
	}
	if lines := b.logLines(t); len(lines) != 1 || lines[0]["msg"] != "event ignored" {
		t.Errorf("log lines %v, want one 'event ignored'", lines)
	}
}

func TestEventBridge(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	oc := b.put(t, "eb/a b.txt", "eventbridge")
	// EventBridge does not URL-encode the key.
	ev := fmt.Sprintf(`{"version":"0","id":"1","detail-type":"Object Created","source":"aws.s3","account":"123456789012",
		"time":"2024-01-01T00:00:00Z","region":"us-east-1","resources":["arn:aws:s3:::%[1]s"],
		"detail":{"version":"0","bucket":{"name":%[1]q},"object":{"key":%[2]q,"size":%[3]d,"etag":%[4]q,"sequencer":"1"},
		"request-id":"R","requester":"123456789012","source-ip-address":"127.0.0.1","reason":"PutObject"}}`,
		b.input, oc.Key, oc.Size, oc.ETag)
	resp, err := h.Handle(context.Background(), json.RawMessage(ev))
	if err != nil || resp.Created != 1 {
		t.Fatalf("handle: %+v, %v", resp, err)
	}
	if rec := b.mustRecord(t, jobID(oc)); rec.Key != "eb/a b.txt" {
		t.Errorf("record key %q", rec.Key)
	}
}

func TestBadRecordDoesNotFailBatch(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	good1, good2 := b.put(t, "good/1", "1"), b.put(t, "good/2", "2")
	var n struct{ Records []json.RawMessage }
	if err := json.Unmarshal(notification(t, good1, good2), &n); err != nil {
		t.Fatal(err)
	}
	badKey := strings.Replace(string(n.Records[0]), `"key":"good/1"`, `"key":"%zz"`, 1)
	badVersion := strings.Replace(string(n.Records[0]), `"eventVersion":"2.1"`, `"eventVersion":"1.0"`, 1)
	ev := fmt.Sprintf(`{"Records":[%s,%s,"not an object",%s,%s]}`, n.Records[0], badKey, badVersion, n.Records[1])
	resp, err := h.Handle(context.Background(), json.RawMessage(ev))
	if err != nil {
		t.Fatalf("a bad record failed the batch: %v", err)
	}
	if resp.Created != 2 || resp.BadRecords != 3 {
		t.Errorf("created %d bad %d, want 2 and 3: %+v", resp.Created, resp.BadRecords, resp)
	}
	b.mustRecord(t, jobID(good1))
	b.mustRecord(t, jobID(good2))
	if diff := cmp.Diff([]string{"bad_record", "bad_record", "bad_record", "created", "created"}, b.outcomes(t)); diff != "" {
		t.Errorf("logged outcomes (-want +got):\n%s", diff)
	}
}

func TestDispatchFailureFailsInvocation(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	ok, down := b.put(t, "d/ok", "ok"), b.put(t, "d/down", "down")
	b.disp.Func = func(id string) (string, error) {
		if id == jobID(down) {
			return "", fmt.Errorf("%w: instance i-0123456789abcdef0 is not online", dispatch.ErrUnavailable)
		}
		return "", nil
	}
	ev := notification(t, ok, down)
	resp, err := h.Handle(context.Background(), ev)
	if err == nil || !errors.Is(err, dispatch.ErrUnavailable) {
		t.Fatalf("error %v, want one wrapping dispatch.ErrUnavailable so Lambda retries", err)
	}
	if resp.Created != 1 || resp.Failed != 1 {
		t.Errorf("created %d failed %d, want 1 and 1", resp.Created, resp.Failed)
	}
	if !slices.Contains(b.outcomes(t), "failed") {
		t.Errorf("no 'failed' log line: %v", b.logLines(t))
	}

	// Lambda's retry: the dispatched job is a duplicate, the other is sent.
	b.disp.Func = nil
	resp, err = h.Handle(context.Background(), ev)
	if err != nil || resp.Duplicate != 1 || resp.Redispatch != 1 {
		t.Fatalf("retry: %+v, %v; want one duplicate, one redispatch", resp, err)
	}
	if rec := b.mustRecord(t, jobID(down)); rec.CommandID == "" {
		t.Errorf("retried job has no command ID")
	}
}

func TestUnreadableEvent(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	for _, ev := range []string{`not json`, `{"hello":"world"}`} {
		if _, err := h.Handle(context.Background(), json.RawMessage(ev)); err == nil {
			t.Errorf("%s: no error; an event of no known shape should reach the on-failure destination", ev)
		}
	}
	if len(b.disp.Dispatched()) != 0 {
		t.Errorf("dispatched %v", b.disp.Dispatched())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFailFastAfterNoWorker(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	input, store := srv.Bucket(t, "input"), jobstore.New(srv.Client, srv.Bucket(t, "state"))
	var calls int
	var mu sync.Mutex
	fake := &dispatchtest.Recorder{Driver: "ssm", Func: func(string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return "", fmt.Errorf("%w: instance i-0123456789abcdef0 is starting", dispatch.ErrUnavailable)
	}}
	o, err := orchestrator.New(orchestrator.Config{InputBucket: input}, srv.Client, store, lambda.FailFast(fake))
	if err != nil {
		t.Fatal(err)
	}
	h := lambda.New(o, &syncBuffer{})
	var objs []s3event.ObjectCreated
	for i := range 5 {
		objs = append(objs, s3event.ObjectCreated{EventName: "ObjectCreated:Put", Bucket: input, Key: fmt.Sprintf("ff/%d", i), Size: 1, ETag: fmt.Sprintf("%032x", i)})
	}
	ev := notification(t, objs...)
	for range 2 { // each invocation tries the worker once
		resp, err := h.Handle(context.Background(), ev)
		if !errors.Is(err, dispatch.ErrUnavailable) || resp.Failed != 5 {
			t.Fatalf("handle: failed %d, %v; want 5 failed with ErrUnavailable", resp.Failed, err)
		}
	}
	if calls != 2 {
		t.Errorf("the dispatcher was called %d times in 2 invocations, want once per invocation", calls)
	}
	for _, oc := range objs {
		if rec, _, err := store.Get(context.Background(), jobID(oc)); err != nil || rec.State != job.Queued {
			t.Errorf("job of %q not recorded as queued: %v", oc.Key, err)
		}
	}
	// Outside an invocation it is the dispatcher itself.
	if _, err := lambda.FailFast(fake).Dispatch(context.Background(), jobID(objs[0])); err == nil || calls != 3 {
		t.Errorf("direct dispatch: %v, calls %d", err, calls)
	}
}
