package e2e

// The orchestrator Lambda as AWS runs it: the real bootstrap binary under
// the AWS Lambda Runtime Interface Emulator, its S3 the embedded server of
// a `conveyor up`, its SSM and EC2 a fake speaking their wire protocols.

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// What the fake stack configures on the function.
const (
	lambdaDocument   = "conveyor-run-job-e2e"
	lambdaInstance   = "i-0e2e0000000000001"
	lambdaLogGroup   = "/conveyor/e2e/jobs"
	lambdaExecTime   = "5400" // CONVEYOR_EXECUTION_TIMEOUT=90m, in seconds
	lambdaDelivery   = 600    // the SSM driver's default delivery timeout
	invokeTimeout    = 60 * time.Second
	upIgnoresItsOwn  = "__none__/"
	lambdaRIEVersion = "v0.0.0-20261030222936-bef5c4ba774d"
)

var (
	bootstrapOnce sync.Once
	bootstrapPath string
	bootstrapErr  error
)

// lambdaBootstrap builds the bootstrap for this machine, as the Makefile
// builds it for Lambda (-tags lambda.norpc), once per test binary.
func lambdaBootstrap(t *testing.T) string {
	t.Helper()
	bootstrapOnce.Do(func() {
		dir := filepath.Dir(conveyorBin)
		bootstrapPath = filepath.Join(dir, "lambda", "bootstrap")
		bootstrapErr = goBuild(bootstrapPath, nil)
	})
	if bootstrapErr != nil {
		t.Fatal(bootstrapErr)
	}
	return bootstrapPath
}

func goBuild(out string, env []string, flags ...string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	args := append([]string{"build", "-tags", "lambda.norpc"}, flags...)
	cmd := exec.Command("go", append(args, "-o", out, "./cmd/conveyor-lambda")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build conveyor-lambda: %v\n%s", err, b)
	}
	return nil
}

// rieBinary finds the emulator on PATH or in $(go env GOPATH)/bin.
func rieBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "aws-lambda-rie")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("aws-lambda-rie is not installed (neither on PATH nor in $(go env GOPATH)/bin); install it with " +
		"go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@" + lambdaRIEVersion)
	return ""
}

// ---- the fake SSM and EC2 endpoint ----

// fakeSSM answers SSM (JSON 1.1) and EC2 (query protocol) for one online
// worker, accepts any signature, and records each SendCommand. Agent, when
// set, plays the SSM agent: it runs each command and returns its status.
type fakeSSM struct {
	t     *testing.T
	srv   *httptest.Server
	Agent func(jobID string) (status string)

	mu         sync.Mutex
	sent       []ssmCommand
	rejectSend bool // answer SendCommand as SSM does for a worker gone offline
	done       sync.WaitGroup
}

func (f *fakeSSM) setRejectSend(v bool) {
	f.mu.Lock()
	f.rejectSend = v
	f.mu.Unlock()
}

// ssmCommand is one SendCommand as received, and its status.
type ssmCommand struct {
	ID             string
	Document       string
	Instances      []string
	Parameters     map[string][]string
	TimeoutSeconds int
	Comment        string
	LogGroup       string
	Status         string // Pending, then what Agent returned
}

func newFakeSSM(t *testing.T) *fakeSSM {
	f := &fakeSSM{t: t}
	f.srv = httptest.NewServer(f)
	t.Cleanup(func() {
		f.done.Wait() // agents still running
		f.srv.Close()
	})
	return f
}

// Sent returns the commands received so far.
func (f *fakeSSM) Sent() []ssmCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

// Wait waits for the agents of every command sent so far.
func (f *fakeSSM) Wait() { f.done.Wait() }

func (f *fakeSSM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		f.serveSSM(w, strings.TrimPrefix(target, "AmazonSSM."), body)
		return
	}
	form, _ := url.ParseQuery(string(body))
	f.serveEC2(w, form.Get("Action"))
}

func (f *fakeSSM) serveSSM(w http.ResponseWriter, op string, body []byte) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	switch op {
	case "DescribeInstanceInformation":
		json.NewEncoder(w).Encode(map[string]any{"InstanceInformationList": []map[string]any{{
			"InstanceId": lambdaInstance, "PingStatus": "Online", "PlatformType": "Linux", "ResourceType": "EC2Instance",
		}}})
	case "SendCommand":
		var in struct {
			DocumentName           string
			InstanceIds            []string
			Parameters             map[string][]string
			TimeoutSeconds         int
			Comment                string
			CloudWatchOutputConfig struct{ CloudWatchLogGroupName string }
		}
		if err := json.Unmarshal(body, &in); err != nil {
			f.t.Errorf("SendCommand body %s: %v", body, err)
		}
		f.mu.Lock()
		if f.rejectSend {
			f.mu.Unlock()
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"__type": "InvalidInstanceId",
				"Message": "Instances [[" + lambdaInstance + "]] not in a valid state for account 123456789012"})
			return
		}
		c := ssmCommand{
			ID: fmt.Sprintf("%08x-e2e0-4000-8000-000000000000", len(f.sent)+1), Document: in.DocumentName,
			Instances: in.InstanceIds, Parameters: in.Parameters, TimeoutSeconds: in.TimeoutSeconds,
			Comment: in.Comment, LogGroup: in.CloudWatchOutputConfig.CloudWatchLogGroupName, Status: "Pending",
		}
		i := len(f.sent)
		f.sent = append(f.sent, c)
		f.mu.Unlock()
		if f.Agent != nil {
			// The SSM agent runs the command after SendCommand returned.
			f.done.Add(1)
			go func() {
				defer f.done.Done()
				status := f.Agent(strings.Join(in.Parameters["JobId"], ","))
				f.mu.Lock()
				f.sent[i].Status = status
				f.mu.Unlock()
			}()
		}
		json.NewEncoder(w).Encode(map[string]any{"Command": map[string]any{
			"CommandId": c.ID, "DocumentName": c.Document, "InstanceIds": c.Instances,
			"Parameters": c.Parameters, "Status": "Pending", "TimeoutSeconds": c.TimeoutSeconds,
		}})
	default:
		f.t.Errorf("unexpected SSM operation %s", op)
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"__type": "UnknownOperationException", "message": op})
	}
}

// serveEC2 answers what a driver might ask about an online worker; with
// the worker online the Lambda should not need EC2 at all.
func (f *fakeSSM) serveEC2(w http.ResponseWriter, action string) {
	f.t.Errorf("unexpected EC2 action %q: the worker is online", action)
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(http.StatusBadRequest)
	type e struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	out, _ := xml.Marshal(struct {
		XMLName   xml.Name `xml:"Response"`
		Errors    []e      `xml:"Errors>Error"`
		RequestID string   `xml:"RequestID"`
	}{Errors: []e{{"InvalidAction", action}}, RequestID: "e2e"})
	w.Write(out)
}

// ---- the emulator ----

// rieProc is a running aws-lambda-rie with the bootstrap.
type rieProc struct {
	URL     string
	Started time.Time
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
}

// lambdaEnv is the function's environment as the stack sets it, pointed
// at the `conveyor up` and the fake SSM.
func lambdaEnv(up *upProc, ssm *fakeSSM) []string {
	return []string{
		"AWS_LAMBDA_FUNCTION_NAME=conveyor-orchestrator",
		"AWS_LAMBDA_FUNCTION_TIMEOUT=120",
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=" + up.Creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + up.Creds.SecretAccessKey,
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL_S3=" + up.Endpoint,
		"AWS_ENDPOINT_URL_SSM=" + ssm.srv.URL,
		"AWS_ENDPOINT_URL_EC2=" + ssm.srv.URL,
		"CONVEYOR_INPUT_BUCKET=" + inputBucket,
		"CONVEYOR_OUTPUT_BUCKET=" + outputBucket,
		"CONVEYOR_STATE_BUCKET=" + stateBucket,
		"CONVEYOR_SSM_DOCUMENT=" + lambdaDocument,
		"CONVEYOR_WORKER_INSTANCE_ID=" + lambdaInstance,
		"CONVEYOR_SSM_LOG_GROUP=" + lambdaLogGroup,
		"CONVEYOR_EXECUTION_TIMEOUT=90m",
		"CONVEYOR_MAX_ATTEMPTS=2",
		"CONVEYOR_FILTER_PREFIXES=",
		"CONVEYOR_FILTER_SUFFIXES=",
	}
}

// startRIE starts the emulator on free loopback ports. The emulator starts
// the bootstrap (the Lambda init) on the first invocation.
func startRIE(t *testing.T, env []string) *rieProc {
	t.Helper()
	rie, bootstrap := rieBinary(t), lambdaBootstrap(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := &rieProc{URL: "http://" + addr + "/2015-03-31/functions/function/invocations", out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(rie,
		"--runtime-interface-emulator-address", addr,
		"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--log-level", "error",
		bootstrap)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("aws-lambda-rie output:\n%s", p.out)
		}
	})
	return p
}

// invoke sends one event and returns the handler's response document, or
// Lambda's error document for a function error.
func (p *rieProc) invoke(t *testing.T, event []byte) (lambdaResponse, []byte) {
	t.Helper()
	status, body := p.invokeRaw(t, event)
	if status != http.StatusOK {
		t.Fatalf("invoke: HTTP %d: %s", status, body)
	}
	var r lambdaResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("invoke response %s: %v", body, err)
	}
	return r, body
}

// invokeRaw sends one event and returns the emulator's HTTP status and
// body. Connection errors are retried until the emulator listens.
func (p *rieProc) invokeRaw(t *testing.T, event []byte) (int, []byte) {
	t.Helper()
	deadline := time.Now().Add(invokeTimeout)
	for {
		resp, err := http.Post(p.URL, "application/json", bytes.NewReader(event))
		if err != nil {
			select {
			case <-p.exited:
				t.Fatalf("aws-lambda-rie exited:\n%s", p.out)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("invoke: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, body
	}
}

// lambdaResponse is the handler's response, or Lambda's error document.
type lambdaResponse struct {
	Created    int    `json:"created"`
	Duplicate  int    `json:"duplicate"`
	Filtered   int    `json:"filtered"`
	BadRecords int    `json:"bad_records"`
	Failed     int    `json:"failed"`
	Ignored    string `json:"ignored"`
	Records    []struct {
		Outcome string `json:"outcome"`
		JobID   string `json:"job_id"`
		Key     string `json:"key"`
	} `json:"records"`
	ErrorMessage string `json:"errorMessage"`
	ErrorType    string `json:"errorType"`
}

// ---- fixtures from real uploads ----

// upload puts body into the input bucket and returns the object as S3
// announces it, from the PutObject response.
func upload(t *testing.T, c *s3.Client, key string, body []byte) s3event.ObjectCreated {
	t.Helper()
	out, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return s3event.ObjectCreated{
		EventName: "ObjectCreated:Put", Bucket: inputBucket, Key: key, Size: int64(len(body)),
		ETag: s3event.TrimETag(aws.ToString(out.ETag)), VersionID: aws.ToString(out.VersionId),
	}
}

// notificationOf is the S3 notification for objs, built as the embedded
// server's hook builds it.
func notificationOf(t *testing.T, objs ...s3event.ObjectCreated) []byte {
	t.Helper()
	var n s3event.Notification
	for _, oc := range objs {
		n.Records = append(n.Records, s3event.NewRecord("us-east-1", oc))
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func objJobID(oc s3event.ObjectCreated) string {
	return job.ID(oc.Bucket, oc.Key, job.Revision(oc.VersionID, oc.ETag))
}

// startLambdaUp starts a `conveyor up` whose own orchestrator ignores every
// upload and whose reconciler does not run during the test, so only the
// Lambda under test creates and dispatches jobs.
func startLambdaUp(t *testing.T) *upProc {
	return startUp(t, upOptions{Env: []string{
		"CONVEYOR_FILTER_PREFIXES=" + upIgnoresItsOwn,
		"CONVEYOR_RECONCILE_INTERVAL=1h",
	}})
}

// checkSent checks that the commands sent are exactly one per job, with
// the stack's document, timeouts, worker and log group, and that each
// job's record holds its command ID.
func checkSent(t *testing.T, up *upProc, sent []ssmCommand, objs []s3event.ObjectCreated) {
	t.Helper()
	byJob := map[string]ssmCommand{}
	for _, c := range sent {
		id := strings.Join(c.Parameters["JobId"], ",")
		if _, dup := byJob[id]; dup {
			t.Errorf("job %s sent twice", id)
		}
		byJob[id] = c
		if c.Document != lambdaDocument || !slices.Equal(c.Instances, []string{lambdaInstance}) ||
			!slices.Equal(c.Parameters["ExecutionTimeout"], []string{lambdaExecTime}) || len(c.Parameters) != 2 ||
			c.TimeoutSeconds != lambdaDelivery || c.LogGroup != lambdaLogGroup || c.Comment != "conveyor job "+id {
			t.Errorf("SendCommand %+v; want document %s, instance %s, ExecutionTimeout %s, TimeoutSeconds %d, log group %s",
				c, lambdaDocument, lambdaInstance, lambdaExecTime, lambdaDelivery, lambdaLogGroup)
		}
	}
	if len(sent) != len(objs) {
		t.Errorf("%d commands sent, want %d", len(sent), len(objs))
	}
	for _, oc := range objs {
		id := objJobID(oc)
		c, ok := byJob[id]
		if !ok {
			t.Errorf("no SendCommand for %q (job %s)", oc.Key, id)
			continue
		}
		rec, err := record(context.Background(), up.S3, id)
		if err != nil || rec == nil {
			t.Errorf("job %s (%q): no record in s3://%s (%v)", id, oc.Key, stateBucket, err)
			continue
		}
		if rec.Key != oc.Key || rec.CommandID != c.ID || rec.Dispatcher != "ssm" || rec.State != job.Queued || rec.MaxAttempts != 2 {
			t.Errorf("record of %q: key %q command %q dispatcher %q state %s max attempts %d; want command %s, ssm, queued, 2",
				oc.Key, rec.Key, rec.CommandID, rec.Dispatcher, rec.State, rec.MaxAttempts, c.ID)
		}
	}
}

func TestLambdaUnderEmulator(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t)
	rie := startRIE(t, lambdaEnv(up, ssm))

	// run invokes the function with event and checks what it sent.
	run := func(t *testing.T, event []byte, objs []s3event.ObjectCreated) lambdaResponse {
		t.Helper()
		before := len(ssm.Sent())
		resp, raw := rie.invoke(t, event)
		if resp.ErrorMessage != "" || resp.Failed != 0 {
			t.Fatalf("invocation failed: %s", raw)
		}
		if resp.Created != len(objs) {
			t.Errorf("created %d, want %d: %s", resp.Created, len(objs), raw)
		}
		checkSent(t, up, ssm.Sent()[before:], objs)
		return resp
	}

	t.Run("single record", func(t *testing.T) {
		oc := upload(t, up.S3, "single/hello.txt", []byte("hello\n"))
		run(t, notificationOf(t, oc), []s3event.ObjectCreated{oc})
	})

	t.Run("100 records", func(t *testing.T) {
		var objs []s3event.ObjectCreated
		for i := range 100 {
			objs = append(objs, upload(t, up.S3, fmt.Sprintf("many/%03d.txt", i), []byte(strings.Repeat("line\n", i+1))))
		}
		run(t, notificationOf(t, objs...), objs)
	})

	t.Run("multipart", func(t *testing.T) {
		ctx := context.Background()
		key := "multipart/big file.bin"
		mu, err := up.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(inputBucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		var parts []types.CompletedPart
		for i, body := range [][]byte{bytes.Repeat([]byte{'m'}, 5<<20), []byte("end")} {
			p, err := up.S3.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(inputBucket), Key: aws.String(key), UploadId: mu.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(body)})
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, types.CompletedPart{ETag: p.ETag, PartNumber: aws.Int32(int32(i + 1))})
		}
		done, err := up.S3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(inputBucket), Key: aws.String(key), UploadId: mu.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
		if err != nil {
			t.Fatal(err)
		}
		// The embedded server's multipart event: size 0, taken from HEAD.
		oc := s3event.ObjectCreated{EventName: "ObjectCreated:CompleteMultipartUpload", Bucket: inputBucket, Key: key, ETag: s3event.TrimETag(aws.ToString(done.ETag))}
		run(t, notificationOf(t, oc), []s3event.ObjectCreated{oc})
		if rec, _ := record(ctx, up.S3, objJobID(oc)); rec == nil || rec.Size != 5<<20+3 {
			t.Errorf("multipart record %+v: want size %d from HEAD", rec, 5<<20+3)
		}
	})

	t.Run("encoded and unicode keys", func(t *testing.T) {
		keys := []string{"enc/a b+c.txt", "enc/日本語 の ファイル.txt", "enc/Ünïcödé %41 &=?.csv", "enc/$(touch x) `id`;'\".txt"}
		var objs []s3event.ObjectCreated
		for _, k := range keys {
			objs = append(objs, upload(t, up.S3, k, []byte(k)))
		}
		event := notificationOf(t, objs...)
		if !bytes.Contains(event, []byte(`"enc/a+b%2Bc.txt"`)) {
			t.Fatalf("fixture keys are not encoded as S3 encodes them: %s", event)
		}
		resp := run(t, event, objs)
		for i, r := range resp.Records {
			if r.Key != keys[i] {
				t.Errorf("record %d: key %q, want %q", i, r.Key, keys[i])
			}
		}
	})

	t.Run("test event", func(t *testing.T) {
		before := len(ssm.Sent())
		resp, raw := rie.invoke(t, []byte(`{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-01T00:00:00.000Z","Bucket":"input","RequestId":"R","HostId":"H"}`))
		if resp.ErrorMessage != "" || resp.Ignored == "" || len(resp.Records) != 0 || len(ssm.Sent()) != before {
			t.Errorf("test event: %s; %d commands sent", raw, len(ssm.Sent())-before)
		}
	})

	t.Run("EventBridge", func(t *testing.T) {
		oc := upload(t, up.S3, "eventbridge/a b.txt", []byte("from EventBridge"))
		event := fmt.Sprintf(`{"version":"0","id":"e2e","detail-type":"Object Created","source":"aws.s3","account":"123456789012",
			"time":"2024-01-01T00:00:00Z","region":"us-east-1","resources":["arn:aws:s3:::input"],
			"detail":{"version":"0","bucket":{"name":"input"},"object":{"key":%q,"size":%d,"etag":%q,"sequencer":"1"},"reason":"PutObject"}}`,
			oc.Key, oc.Size, oc.ETag)
		run(t, []byte(event), []s3event.ObjectCreated{oc})
	})

	t.Run("bad record among good ones", func(t *testing.T) {
		oc := upload(t, up.S3, "bad/good.txt", []byte("good"))
		var n struct{ Records []json.RawMessage }
		json.Unmarshal(notificationOf(t, oc), &n)
		event := fmt.Sprintf(`{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"input"},"object":{"key":"%%zz"}}},%s]}`, n.Records[0])
		resp := run(t, []byte(event), []s3event.ObjectCreated{oc})
		if resp.BadRecords != 1 {
			t.Errorf("bad records %d, want 1", resp.BadRecords)
		}
	})

	t.Run("dispatch failure fails the invocation", func(t *testing.T) {
		oc := upload(t, up.S3, "fail/later.txt", []byte("later"))
		event := notificationOf(t, oc)
		ssm.setRejectSend(true)
		resp, raw := rie.invoke(t, event)
		ssm.setRejectSend(false)
		if resp.ErrorMessage == "" || !strings.Contains(resp.ErrorMessage, "not in a valid state") {
			t.Fatalf("invocation with SSM rejecting the worker: %s; want a function error naming the cause, so Lambda retries", raw)
		}
		rec, err := record(context.Background(), up.S3, objJobID(oc))
		if err != nil || rec == nil || rec.State != job.Queued || rec.CommandID != "" {
			t.Fatalf("record after the failed dispatch: %+v, %v; want queued without a command", rec, err)
		}
		// Lambda's retry of the same event sends the job.
		before := len(ssm.Sent())
		resp, raw = rie.invoke(t, event)
		if resp.ErrorMessage != "" || len(resp.Records) != 1 || resp.Records[0].Outcome != "redispatch" {
			t.Fatalf("retry: %s; want the job redispatched", raw)
		}
		checkSent(t, up, ssm.Sent()[before:], []s3event.ObjectCreated{oc})
	})

	t.Run("duplicate delivery", func(t *testing.T) {
		oc := upload(t, up.S3, "dup/once.txt", []byte("once"))
		event := notificationOf(t, oc)
		run(t, event, []s3event.ObjectCreated{oc})
		before := len(ssm.Sent())
		resp, raw := rie.invoke(t, event)
		if resp.Duplicate != 1 || len(ssm.Sent()) != before {
			t.Errorf("second delivery: %s; %d commands sent", raw, len(ssm.Sent())-before)
		}
	})
}

// TestLambdaEndToEnd: real uploads, the events the embedded server's hook
// would emit for them, the bootstrap under the emulator, SSM delivering to
// a test agent that runs `conveyor worker run` as the SSM document does,
// and the results in the output bucket.
func TestLambdaEndToEnd(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t)
	ssm.Agent = func(jobID string) string {
		// What the document runs, with the worker's config: here, the
		// `conveyor up` on its data dir (the instance role and
		// /etc/conveyor/conveyor.yaml on EC2).
		ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, conveyorBin, "worker", "run", "--job", jobID, "--data-dir", up.DataDir)
		cmd.Env = cleanEnv()
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("conveyor worker run --job %s: %v\n%s", jobID, err, out)
			return "Failed"
		}
		return "Success"
	}
	rie := startRIE(t, lambdaEnv(up, ssm))

	inputs := map[string][]byte{
		"e2e/report one.txt":   []byte("one two three\nfour\n"),
		"e2e/ünïcödé+plus.txt": []byte("unicode key\n"),
		"e2e/binary.bin":       {0, 1, 2, 3, 0xff, 0xfe},
	}
	var objs []s3event.ObjectCreated
	for k, b := range inputs {
		objs = append(objs, upload(t, up.S3, k, b))
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	resp, raw := rie.invoke(t, notificationOf(t, objs...))
	if resp.ErrorMessage != "" || resp.Created != len(objs) {
		t.Fatalf("invocation: %s", raw)
	}
	for _, oc := range objs {
		rec := waitState(t, up.S3, objJobID(oc), job.Succeeded, jobTimeout)
		checkReport(t, up.S3, rec, inputs[oc.Key])
		if got := mustGet(t, up.S3, outputBucket, oc.Key+"/report.json"); len(got) == 0 {
			t.Errorf("s3://%s/%s/report.json is empty", outputBucket, oc.Key)
		}
	}
	ssm.Wait()
	for _, c := range ssm.Sent() {
		if c.Status != "Success" {
			t.Errorf("command %s (job %v) ended %s, want Success", c.ID, c.Parameters["JobId"], c.Status)
		}
	}
	if n := len(ssm.Sent()); n != len(objs) {
		t.Errorf("%d commands sent, want %d", n, len(objs))
	}
}

// TestLambdaBadConfigFailsInit: a missing variable fails the init with one
// line naming it.
func TestLambdaBadConfigFailsInit(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t)
	var env []string
	for _, kv := range lambdaEnv(up, ssm) {
		if !strings.HasPrefix(kv, "CONVEYOR_SSM_DOCUMENT=") {
			env = append(env, kv)
		}
	}
	rie := startRIE(t, env)
	// The emulator answers a failed init with 502, Lambda with an
	// Unhandled/Runtime.ExitError function error.
	if status, raw := rie.invokeRaw(t, []byte(`{"Records":[]}`)); status == http.StatusOK {
		t.Errorf("invocation with no CONVEYOR_SSM_DOCUMENT succeeded: %s", raw)
	}
	if out := rie.out.String(); !strings.Contains(out, "conveyor-lambda: configuration: CONVEYOR_SSM_DOCUMENT is not set") {
		t.Errorf("init output does not name the variable:\n%s", out)
	}
}

// TestLambdaMeasure reports the figures of the closing note; it runs only
// with CONVEYOR_MEASURE=1:
//
//	CONVEYOR_MEASURE=1 go test ./e2e -run LambdaMeasure -count=1 -v
//
// the bootstrap's size as the Makefile builds it (linux/arm64, -trimpath,
// -ldflags "-s -w", zipped), and the median of 20 cold starts under the
// emulator: from starting the emulator to the response of the first event
// (one new object: a record created and a command sent).
func TestLambdaMeasure(t *testing.T) {
	if os.Getenv("CONVEYOR_MEASURE") != "1" {
		t.Skip("set CONVEYOR_MEASURE=1 to measure the bootstrap's size and cold start")
	}
	rieBinary(t)
	dir := t.TempDir()
	arm := filepath.Join(dir, "bootstrap")
	if err := goBuild(arm, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"}, "-trimpath", "-ldflags", "-s -w"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(arm)
	if err != nil {
		t.Fatal(err)
	}
	zipped := zipSize(t, arm)
	t.Logf("bootstrap linux/arm64: %.1f MiB unzipped (%d bytes), %.1f MiB zipped (%d bytes)",
		float64(st.Size())/(1<<20), st.Size(), float64(zipped)/(1<<20), zipped)

	up := startLambdaUp(t)
	ssm := newFakeSSM(t)
	env := lambdaEnv(up, ssm)
	var times []time.Duration
	for i := range 20 {
		oc := upload(t, up.S3, "measure/"+strconv.Itoa(i)+".txt", []byte("cold start "+strconv.Itoa(i)))
		event := notificationOf(t, oc)
		rie := startRIE(t, env)
		resp, raw := rie.invoke(t, event)
		times = append(times, time.Since(rie.Started))
		if resp.Created != 1 {
			t.Fatalf("cold start %d: %s", i, raw)
		}
		rie.cmd.Process.Kill()
		<-rie.exited
	}
	slices.Sort(times)
	t.Logf("cold start to first handled event under aws-lambda-rie (linux/amd64 bootstrap, %d runs): median %s, min %s, max %s",
		len(times), (times[9]+times[10])/2, times[0], times[len(times)-1])
}

// zipSize zips the file as the Makefile does (deflate) and returns the size.
func zipSize(t *testing.T, path string) int64 {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "bootstrap", Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return int64(buf.Len())
}
