package ssm

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	ssmdoc "github.com/conveyorhq/conveyor/deploy/ssm"
	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
)

func TestMain(m *testing.M) {
	onlinePollInterval = 5 * time.Millisecond
	os.Exit(m.Run())
}

const (
	worker1 = "i-0aaaaaaaaaaaaaaa1"
	worker2 = "i-0bbbbbbbbbbbbbbb2"
	worker3 = "i-0ccccccccccccccc3"
)

// testConfig is a fixed-instance config with fast retries.
func testConfig() Config {
	return Config{
		DocumentName:     "conveyor-run-job",
		InstanceID:       worker1,
		ExecutionTimeout: 2 * time.Hour,
		DeliveryTimeout:  5 * time.Minute,
		LogGroup:         "/conveyor/commands",
		WaitOnline:       5 * time.Second,
		Throttle:         Throttle{MaxAttempts: 5, Base: time.Millisecond, Max: 4 * time.Millisecond},
	}
}

// tagged returns a config selecting workers tagged conveyor:role=worker.
func tagged(cfg Config) Config {
	cfg.InstanceID, cfg.TagKey, cfg.TagValue = "", "conveyor:role", "worker"
	return cfg
}

var workerTag = map[string]string{"conveyor:role": "worker", "Name": "conveyor-worker"}

// setup starts a fake AWS with instances and a Dispatcher for cfg on it.
func setup(t *testing.T, cfg Config, instances []ssmtest.Instance) (*Dispatcher, *ssmtest.Server) {
	t.Helper()
	return setupWith(t, cfg, ssmtest.Options{Instances: instances})
}

// setupWith is setup with more options for the fake. Every SendCommand
// must carry cfg's document and log group, and testConfig's timeouts.
func setupWith(t *testing.T, cfg Config, opts ssmtest.Options) (*Dispatcher, *ssmtest.Server) {
	t.Helper()
	opts.Want = &ssmtest.Want{
		Document:         cfg.DocumentName,
		ExecutionTimeout: "7200",
		TimeoutSeconds:   300,
		LogGroup:         cfg.LogGroup,
	}
	f := ssmtest.New(t, opts)
	sc, ec := f.Clients()
	d, err := New(cfg, sc, ec)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, f
}

func TestConformance(t *testing.T) {
	dispatchtest.Run(t, func(t *testing.T) dispatchtest.Harness {
		// Enough slots that no conformance job finds them all taken.
		d, f := setup(t, tagged(testConfig()), []ssmtest.Instance{
			{ID: worker1, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 128},
			{ID: worker2, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 128},
		})
		return dispatchtest.Harness{Dispatcher: d, Delivered: f.Delivered}
	})
}

func TestSendsToOnlineInstance(t *testing.T) {
	t.Parallel()
	d, f := setup(t, testConfig(), []ssmtest.Instance{
		{ID: worker1, State: "running", Ping: "Online"},
	})
	id := dispatchtest.ID(7)
	ref, err := d.Dispatch(context.Background(), id)
	if err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	sent := f.Commands()
	if len(sent) != 1 {
		t.Fatalf("%d commands sent, want 1", len(sent))
	}
	if ref != sent[0].ID {
		t.Errorf("ref %q, want the command ID %q", ref, sent[0].ID)
	}
	if diff := cmp.Diff([]string{worker1}, sent[0].InstanceIDs); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	wantParams := map[string][]string{"JobId": {id}, "ExecutionTimeout": {"7200"}}
	if diff := cmp.Diff(wantParams, sent[0].Parameters); diff != "" {
		t.Errorf("parameters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"DescribeInstanceInformation", "DescribeInstances", "ListCommandInvocations", "SendCommand"}, f.Ops()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if d.Name() != "ssm" {
		t.Errorf("Name() = %q, want ssm", d.Name())
	}
}

func TestNoLogGroupLeavesCloudWatchOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.LogGroup = ""
	d, f := setup(t, cfg, []ssmtest.Instance{{ID: worker1, State: "running", Ping: "Online"}})
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(1)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.Commands()); n != 1 {
		t.Fatalf("%d commands sent, want 1", n) // the fake checks the CloudWatch settings
	}
}

func TestPicksAnOnlineWorkerByTag(t *testing.T) {
	t.Parallel()
	d, f := setupWith(t, tagged(testConfig()), ssmtest.Options{
		Instances: []ssmtest.Instance{
			{ID: worker1, Tags: workerTag, State: "stopped", Ping: "ConnectionLost"},
			{ID: worker2, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 16},
			{ID: worker3, Tags: map[string]string{"conveyor:role": "builder"}, State: "running", Ping: "Online"},
		},
		PageSize: 1, // the online worker is on the second page
	})
	for i := range 10 {
		if _, err := d.Dispatch(context.Background(), dispatchtest.ID(i)); err != nil {
			t.Fatalf("Dispatch %d: %v", i, err)
		}
	}
	for _, c := range f.Commands() {
		if c.Instance != worker2 {
			t.Errorf("job %s sent to %s, want the online worker %s", c.JobID, c.Instance, worker2)
		}
	}
	if n := f.Calls("StartInstances"); n != 0 {
		t.Errorf("%d StartInstances with a worker online", n)
	}
}

func TestOfflineWithoutStartStopped(t *testing.T) {
	t.Parallel()
	d, f := setup(t, testConfig(), []ssmtest.Instance{
		{ID: worker1, State: "stopped", Ping: "ConnectionLost"},
	})
	_, err := d.Dispatch(context.Background(), dispatchtest.ID(1))
	if !errors.Is(err, dispatch.ErrUnavailable) || !strings.Contains(err.Error(), "ConnectionLost") {
		t.Fatalf("Dispatch = %v, want ErrUnavailable naming the ping status", err)
	}
	if diff := cmp.Diff([]string{"DescribeInstanceInformation"}, f.Ops()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestUnmanagedInstance(t *testing.T) {
	t.Parallel()
	d, _ := setup(t, testConfig(), []ssmtest.Instance{
		{ID: worker1, State: "running"}, // no SSM agent registered
	})
	_, err := d.Dispatch(context.Background(), dispatchtest.ID(1))
	if !errors.Is(err, dispatch.ErrUnavailable) || !strings.Contains(err.Error(), "check the SSM agent and the instance profile") {
		t.Fatalf("Dispatch = %v, want ErrUnavailable telling what to check", err)
	}
}

func TestStartsStoppedWorker(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.StartStopped = true
	d, f := setup(t, cfg, []ssmtest.Instance{
		{ID: worker1, State: "stopped", Ping: "ConnectionLost", OnlineAfter: 3},
	})
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(1)); err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	want := []string{
		"DescribeInstanceInformation", "DescribeInstances", "StartInstances",
		"DescribeInstanceInformation", "DescribeInstanceInformation", "DescribeInstanceInformation",
		"DescribeInstances", "ListCommandInvocations", "SendCommand",
	}
	if diff := cmp.Diff(want, f.Ops()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if sent := f.Commands(); len(sent) != 1 || sent[0].Instance != worker1 {
		t.Errorf("sent %+v, want one command to %s", sent, worker1)
	}
}

// By tag, one stopped worker is started, not all of them, and a worker
// already starting is waited for rather than starting another.
func TestStartsOneTaggedWorker(t *testing.T) {
	t.Parallel()
	d, f := setup(t, func() Config { c := tagged(testConfig()); c.StartStopped = true; return c }(), []ssmtest.Instance{
		{ID: worker1, Tags: workerTag, State: "stopped", Ping: "ConnectionLost", OnlineAfter: 2},
		{ID: worker2, Tags: workerTag, State: "stopped", Ping: "ConnectionLost", OnlineAfter: 2},
		{ID: worker3, State: "stopped", Ping: "ConnectionLost"},
	})
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(1)); err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(2)); err != nil {
		t.Fatalf("second Dispatch: %v", err)
	}
	if n := f.Calls("StartInstances"); n != 1 {
		t.Errorf("StartInstances called %d times, want 1", n)
	}
	state := func(id string) string { inst, _ := f.Instance(id); return inst.State }
	if state(worker3) != "stopped" {
		t.Errorf("an untagged instance was started")
	}
	if state(worker1) == "stopped" && state(worker2) == "stopped" {
		t.Errorf("no tagged worker was started")
	}
}

func TestStoppedWorkerNeverOnline(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.StartStopped = true
	cfg.WaitOnline = 150 * time.Millisecond
	d, f := setup(t, cfg, []ssmtest.Instance{
		{ID: worker1, State: "stopped", Ping: "ConnectionLost", OnlineAfter: -1},
	})
	start := time.Now()
	_, err := d.Dispatch(context.Background(), dispatchtest.ID(1))
	took := time.Since(start)
	if !errors.Is(err, dispatch.ErrUnavailable) {
		t.Fatalf("Dispatch = %v, want ErrUnavailable", err)
	}
	for _, s := range []string{worker1, "starting", "retried"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if took < cfg.WaitOnline || took > cfg.WaitOnline+2*time.Second {
		t.Errorf("Dispatch took %s, want about WaitOnline (%s)", took, cfg.WaitOnline)
	}
	if f.Calls("SendCommand") != 0 || f.Calls("StartInstances") != 1 {
		t.Errorf("calls %v, want one StartInstances and no SendCommand", f.Ops())
	}
}

// With a negative WaitOnline, Dispatch starts the worker and returns at once.
func TestStartWithoutWaiting(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.StartStopped, cfg.WaitOnline = true, -1
	d, f := setup(t, cfg, []ssmtest.Instance{
		{ID: worker1, State: "stopped", Ping: "ConnectionLost", OnlineAfter: 1},
	})
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(1)); !errors.Is(err, dispatch.ErrUnavailable) {
		t.Fatalf("Dispatch = %v, want ErrUnavailable", err)
	}
	if diff := cmp.Diff([]string{"DescribeInstanceInformation", "DescribeInstances", "StartInstances"}, f.Ops()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.StartStopped = true
	d, _ := setup(t, cfg, []ssmtest.Instance{
		{ID: worker1, State: "stopped", Ping: "ConnectionLost", OnlineAfter: -1},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := d.Dispatch(ctx, dispatchtest.ID(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dispatch = %v, want context.DeadlineExceeded", err)
	}
}

func TestRetriesThrottling(t *testing.T) {
	t.Parallel()
	d, f := setup(t, testConfig(), []ssmtest.Instance{{ID: worker1, State: "running", Ping: "Online"}})
	f.SetFault(ssmtest.FailTimes("SendCommand", 2, ssmtest.Throttled("SendCommand")))
	ref, err := d.Dispatch(context.Background(), dispatchtest.ID(1))
	if err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	if ref == "" {
		t.Error("empty ref")
	}
	if n := f.Calls("SendCommand"); n != 3 {
		t.Errorf("SendCommand called %d times, want 3", n)
	}
}

// Throttling on every AWS call is retried, and the attempts are bounded.
func TestThrottlingIsBounded(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"DescribeInstanceInformation", "SendCommand", "DescribeInstances", "StartInstances"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.StartStopped = true
			state, ping := "stopped", "ConnectionLost"
			if op == "SendCommand" {
				state, ping = "running", "Online"
			}
			d, f := setup(t, cfg, []ssmtest.Instance{{ID: worker1, State: state, Ping: ping, OnlineAfter: 1}})
			f.SetFault(ssmtest.FailTimes(op, -1, ssmtest.Throttled(op)))
			_, err := d.Dispatch(context.Background(), dispatchtest.ID(1))
			if !errors.Is(err, dispatch.ErrUnavailable) || !strings.Contains(err.Error(), "retried") {
				t.Fatalf("Dispatch = %v, want ErrUnavailable saying it will be retried", err)
			}
			if n := f.Calls(op); n != cfg.Throttle.MaxAttempts {
				t.Errorf("%s called %d times, want Throttle.MaxAttempts = %d", op, n, cfg.Throttle.MaxAttempts)
			}
		})
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		op          string
		err         *ssmtest.Error
		unavailable bool
		want        []string
	}{
		{"InvalidInstanceId", "SendCommand", &ssmtest.Error{Status: 400, Code: "InvalidInstanceId", Message: "Instances not in a valid state"}, true,
			[]string{"instance " + worker1 + " is not a managed instance that is running and online in SSM: check the SSM agent and the instance profile"}},
		{"InvalidDocument", "SendCommand", &ssmtest.Error{Status: 400, Code: "com.amazonaws.ssm#InvalidDocument", Message: "Document conveyor-run-job does not exist"}, false,
			[]string{`"conveyor-run-job"`, "DocumentName", "deploy/ssm/conveyor-run-job.yaml"}},
		{"InvalidParameters", "SendCommand", &ssmtest.Error{Status: 400, Code: "InvalidParameters", Message: "Parameter JobId not defined"}, false,
			[]string{"JobId", "redeploy"}},
		{"SendCommandDenied", "SendCommand", &ssmtest.Error{Status: 400, Code: "AccessDeniedException", Message: "User is not authorized"}, false,
			[]string{"access denied", "ssm:SendCommand", "document"}},
		{"DescribeDenied", "DescribeInstanceInformation", &ssmtest.Error{Status: 400, Code: "AccessDeniedException", Message: "User is not authorized"}, false,
			[]string{"access denied", "ssm:DescribeInstanceInformation"}},
		{"StartDenied", "StartInstances", &ssmtest.Error{Status: 403, Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."}, false,
			[]string{"access denied", "ec2:StartInstances"}},
		{"DescribeInstancesDenied", "DescribeInstances", &ssmtest.Error{Status: 403, Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."}, false,
			[]string{"access denied", "ec2:DescribeInstances"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.StartStopped = true
			inst := ssmtest.Instance{ID: worker1, State: "running", Ping: "Online"}
			if tt.op == "StartInstances" || tt.op == "DescribeInstances" {
				inst = ssmtest.Instance{ID: worker1, State: "stopped", Ping: "ConnectionLost", OnlineAfter: 1}
			}
			d, f := setup(t, cfg, []ssmtest.Instance{inst})
			f.SetFault(ssmtest.FailTimes(tt.op, -1, tt.err))
			_, err := d.Dispatch(context.Background(), dispatchtest.ID(1))
			if err == nil {
				t.Fatal("Dispatch succeeded")
			}
			if got := errors.Is(err, dispatch.ErrUnavailable); got != tt.unavailable {
				t.Errorf("errors.Is(err, ErrUnavailable) = %v, want %v: %v", got, tt.unavailable, err)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if n := f.Calls(tt.op); n != 1 {
				t.Errorf("%s called %d times: this error is not worth retrying", tt.op, n)
			}
		})
	}
}

func TestHostileIDsSendNothing(t *testing.T) {
	t.Parallel()
	d, f := setup(t, testConfig(), []ssmtest.Instance{{ID: worker1, State: "running", Ping: "Online"}})
	hostile := append([]string{
		"$(touch /tmp/x)", "`touch /tmp/x`", dispatchtest.ID(1) + "; rm -rf /", dispatchtest.ID(1) + "\n",
		"../../../../etc/shadow", dispatchtest.ID(1) + "0", strings.ToUpper(dispatchtest.ID(10)),
		"{{ JobId }}", "0123456789abcdef0123456789abcde\x00",
	}, dispatchtest.HostileIDs...)
	for _, id := range hostile {
		if _, err := d.Dispatch(context.Background(), id); !errors.Is(err, dispatch.ErrInvalidJobID) {
			t.Errorf("Dispatch(%q) = %v, want ErrInvalidJobID", id, err)
		}
	}
	if ops := f.Ops(); len(ops) != 0 {
		t.Errorf("hostile IDs caused AWS calls: %v", ops)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"NoDocument", func(c *Config) { c.DocumentName = "" }, "DocumentName"},
		{"NoTarget", func(c *Config) { c.InstanceID = "" }, "InstanceID or TagKey"},
		{"BothTargets", func(c *Config) { c.TagKey, c.TagValue = "k", "v" }, "not both"},
		{"TagWithoutValue", func(c *Config) { c.InstanceID, c.TagKey = "", "k" }, "TagKey and TagValue"},
		{"BadInstanceID", func(c *Config) { c.InstanceID = "i-; reboot" }, "InstanceID"},
		{"ExecutionTimeoutTooLong", func(c *Config) { c.ExecutionTimeout = 100000 * time.Second }, "ExecutionTimeout"},
		{"ExecutionTimeoutNegative", func(c *Config) { c.ExecutionTimeout = -time.Second }, "ExecutionTimeout"},
		{"DeliveryTimeoutTooShort", func(c *Config) { c.DeliveryTimeout = 10 * time.Second }, "DeliveryTimeout"},
		{"DeliveryTimeoutTooLong", func(c *Config) { c.DeliveryTimeout = 31 * 24 * time.Hour }, "DeliveryTimeout"},
		{"NoAttempts", func(c *Config) { c.Throttle.MaxAttempts = -1 }, "Throttle.MaxAttempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.modify(&cfg)
			sc, ec := ssmtest.New(t, ssmtest.Options{}).Clients()
			_, err := New(cfg, sc, ec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error naming %q", err, tt.want)
			}
		})
	}
	t.Run("StartStoppedNeedsEC2", func(t *testing.T) {
		cfg := testConfig()
		cfg.StartStopped = true
		sc, _ := ssmtest.New(t, ssmtest.Options{}).Clients()
		if _, err := New(cfg, sc, nil); err == nil || !strings.Contains(err.Error(), "EC2 client") {
			t.Fatalf("New = %v, want an error about the EC2 client", err)
		}
	})
	t.Run("Defaults", func(t *testing.T) {
		got := Config{DocumentName: "d", InstanceID: worker1}.WithDefaults()
		if got.ExecutionTimeout != time.Hour || got.DeliveryTimeout != 10*time.Minute || got.WaitOnline != 20*time.Second ||
			got.Throttle != (Throttle{5, 200 * time.Millisecond, 5 * time.Second}) {
			t.Errorf("WithDefaults = %+v", got)
		}
	})
}

// The parameters the driver sends are the ones the deployed document
// declares, and the values it sends pass the document's allowedPattern.
func TestParametersMatchDocument(t *testing.T) {
	t.Parallel()
	var doc struct {
		Parameters map[string]struct {
			AllowedPattern string `yaml:"allowedPattern"`
		} `yaml:"parameters"`
	}
	if err := yaml.Unmarshal(ssmdoc.Document, &doc); err != nil {
		t.Fatal(err)
	}
	values := map[string][]string{
		ParamJobID:            {dispatchtest.ID(1)},
		ParamExecutionTimeout: {"1", "3600", "99999"},
	}
	if len(doc.Parameters) != len(values) {
		t.Errorf("document parameters %v, driver sends %v", doc.Parameters, values)
	}
	for name, vs := range values {
		p, ok := doc.Parameters[name]
		if !ok {
			t.Errorf("document has no parameter %s", name)
			continue
		}
		re := regexp.MustCompile(p.AllowedPattern)
		for _, v := range vs {
			if !re.MatchString(v) {
				t.Errorf("%s=%q does not match the document's allowedPattern %q", name, v, p.AllowedPattern)
			}
		}
	}
	if got := seconds(MaxExecutionTimeout); got != 99999 {
		t.Errorf("MaxExecutionTimeout is %d seconds, want 99999 (five digits)", got)
	}
}
